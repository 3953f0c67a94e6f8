"""Which strategy steps a site, and why: decided once, at insertion, for the engine
(`choose`) and for the coverage report (`verdict`), from the same rules, so the report and
the engine cannot differ.

- `auto` (the default): the emulator when it runs the instruction on a live thread (one trap,
  nothing mapped into the program); else a boosted out-of-line copy (one trap, an area mapped
  near the code); else plain XOL (two traps). A hit the emulator hands to the CPU (a fault, an
  atomic instruction while other threads run) is boosted where it may be, else plain XOL.
- `emulate`, `xol`, `boost`, `reinsert`: that strategy, or a refusal naming why it cannot
  step the site (branches and calls are emulated under `xol` and `boost`).
"""

from __future__ import annotations

import emu
from emu import Unsupported

from . import xol
from .errors import StepperError
from .records import Breakpoint
from .strategies.base import Ops
from .strategies.boost import BoostOps
from .strategies.emulate import EmulateOps, compile_live
from .strategies.reinsert import ReinsertOps
from .strategies.xol import XolOps

MODES = ("auto", "emulate", "xol", "reinsert", "boost")
#: What `verdict` answers: how `auto` steps a site.
VERDICTS = ("emulate", "xol", "refused")


def live_plan_reason(insn: emu.Instruction) -> str | None:
    """Why emu cannot run `insn` on a live thread (None: it can). Plans that need xmm
    registers run on the thread's FXSAVE image too (stepper.live_vector); flags the SDM
    leaves undefined must come from the host CPU (stepper.host_flags)."""
    return _live(insn)[1]


def _live(insn: emu.Instruction) -> tuple[tuple | None, str | None]:
    """The live plan of `insn` (compiled once: the engine keeps it) or why there is none."""
    if not insn.emulatable:
        return None, insn.reason or "not emulated"
    try:
        return compile_live(insn), None
    except Unsupported as e:
        return None, f"{insn.text}: {e.reason}"


def choose(mode: str, insn: emu.Instruction) -> Ops:
    """The ops for `insn` under `mode`, or StepperError saying why no strategy fits.

    Chosen once at insertion; the hit path never looks at the mode again.
    """
    if mode not in MODES:
        raise StepperError(f"unknown strategy {mode!r}: choose one of {', '.join(MODES)}")
    if mode == "reinsert":
        return ReinsertOps()
    refusal = xol.refusal_reason(insn)
    out_of_line = XolOps(insn) if refusal is None else None
    boosted = BoostOps(insn) if refusal is None and mode != "xol" else None
    fallback: Ops = out_of_line if out_of_line is not None else ReinsertOps()
    live, not_emulated = _live(insn)
    if mode in ("xol", "boost"):
        if out_of_line is not None:
            return boosted or out_of_line
        if not_emulated is None:  # branches and calls: emulated rather than executed out of line
            return EmulateOps(insn, ReinsertOps(), live)
        raise StepperError(f"{insn.text} at {insn.address:#x} cannot be stepped out of line "
                           f"({refusal}) nor emulated ({not_emulated})")
    if not_emulated is None:
        # auto: a hit the emulator hands to the CPU (a fault, an atomic op while other
        # threads run) is boosted where it may be (one trap), else plain XOL.
        return EmulateOps(insn, boosted if mode == "auto" and boosted else fallback, live)
    if mode == "emulate":
        raise StepperError(f"{insn.text} at {insn.address:#x} is not emulated ({not_emulated}); "
                           f"use --mode auto or xol")
    if boosted is not None:
        return boosted
    raise StepperError(f"{insn.text} at {insn.address:#x} can be neither emulated "
                       f"({not_emulated}) nor stepped out of line ({refusal})")


#: (mode, code) -> Known: what `decide` made of a site's bytes. The choice depends on the
#: bytes and the mode only (the emulator's plans and xol_refusals look at no address), so
#: another site with the same bytes gets the same answer: a breakpoint whose bytes were
#: decided before (the preflight read them from the file) waits for its first use to be
#: decoded at its own address (stepper.records.PendingBreakpoint).
_DECIDED: dict[tuple[str, bytes], "Known"] = {}
#: (mode, instruction bytes) -> Known: the same, keyed by the instruction alone (`check`).
_ACCEPTED: dict[tuple[str, bytes], "Known"] = {}


#: (ops class, strategy name, `why` line, instruction text or None when the text names an
#: address): an accepted site's answers that need no decoding at its address.
Known = tuple


def decide(mode: str, code: bytes, address: int) -> tuple[emu.Instruction, Ops]:
    """Decode the instruction at the start of `code` (at `address`) and `choose` its ops;
    the answer is remembered for `known`. Raises emu.DecodeError or StepperError."""
    insn = emu.decode(code, address)
    ops = choose(mode, insn)
    remember(mode, code, insn, ops)
    return insn, ops


def remember(mode: str, code: bytes, insn: emu.Instruction, ops: Ops) -> None:
    """Keep what `choose(mode, insn)` gave for `insn` decoded from `code`, for `known`."""
    key = (mode, bytes(code))
    if key not in _DECIDED:
        relative = insn.rip_relative or xol.refusals.is_relative_branch(insn.capstone)
        _DECIDED[key] = (type(ops), ops.name, _why(ops, mode), None if relative else insn.text)
        _ACCEPTED.setdefault((mode, insn.bytes), _DECIDED[key])


def check(mode: str, code: bytes, address: int) -> None:
    """`decide` for a caller that needs only the verdict (the preflight: thousands of sites,
    many starting with the same instruction): an instruction whose bytes were accepted
    before is accepted again without preparing it (only its length is decoded), and `code`
    is remembered for `known` as `decide` would. Raises as `decide` does."""
    try:
        seen = _ACCEPTED.get((mode, bytes(code[:emu.length(code)])))
    except emu.DecodeError:
        seen = None   # `decide` says it with the address
    if seen is None:
        decide(mode, code, address)
    else:
        _DECIDED.setdefault((mode, bytes(code)), seen)


def known(mode: str, code: bytes) -> Known | None:
    """What `decide` answered for these bytes under `mode` (None: not decided yet)."""
    return _DECIDED.get((mode, bytes(code)))


def verdict(insn: emu.Instruction) -> str:
    """How `auto` steps `insn`: `emulate`, `xol` (boosted or plain, out of line) or `refused`."""
    if live_plan_reason(insn) is None:
        return "emulate"
    if xol.refusal_reason(insn) is None:
        return "xol"
    return "refused"


def text(bp: Breakpoint) -> str:
    """`bp.text` without building a pending breakpoint's ops: a site whose text names an
    address (rip-relative, a relative branch) is disassembled at its own address only."""
    pending = getattr(bp, "pending", None)
    if pending is not None:
        return pending[3] if pending[3] is not None else emu.text(bp.code, bp.address)
    return bp.text


def why(bp: Breakpoint) -> str:
    """One line for the strategy table: why this site did or did not boost."""
    pending = getattr(bp, "pending", None)
    if pending is not None:   # not decoded at its address yet: what its bytes answered
        return pending[2]
    return _why(bp.ops, bp.mode)


def _why(ops: Ops, mode: str) -> str:
    if isinstance(ops, BoostOps):
        return ops.note
    if ops.name == "emulate":
        if isinstance(getattr(ops, "fallback", None), BoostOps):
            return "not boosted: emulated (one trap, no slot); boosted when it falls back"
        return "not boosted: emulated (one trap per hit without a slot)"
    return f"not boosted: --mode {mode}"
