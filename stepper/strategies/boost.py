"""Boosted out-of-line steps: one trap per hit for instructions the emulator declines.

Plain XOL costs two traps per hit: the INT3, then the single-step trap that brings the thread
back so its RIP can be fixed up. Kernel kprobes avoid the second one by *boosting*: the slot
holds the copied instruction followed by a jump back to the original next instruction, so the
thread returns to the program's own code by itself. Under ptrace this is safe as long as the
copied instruction does the same thing wherever it runs, and as long as nobody (the program's
signal handlers, the tracer's callbacks, a detach) ever sees a RIP inside a slot.

Why it looks like this:
- A slot belongs to one probe, not to a thread: its bytes depend only on the probe, so it is
  written once, at insertion, and any number of threads (and a signal handler re-entering the
  probed function) may be inside it at once.
- Slots live in areas placed below the object they serve (one area per object region), so a
  RIP-relative displacement is re-encoded for the slot, never rewritten to a scratch register.
  The jump back is `jmp rel32` when it reaches, else `jmp [rip+0]` with an 8-byte target.
- What is not boosted keeps plain XOL, and the reason is recorded (`BoostOps.note`): a
  `syscall` (the kernel stores the slot address in RCX), a call (it pushes the slot address),
  anything needing a scratch register, x87 instructions (the FPU records their address, which
  fnstenv/fxsave would reveal), and whatever XOL refuses.
- `Boost.map_back` (and stepper.stepping.boost_stopped) is called at every stop the engine
  sees (other than a hit): a RIP at a
  slot's first byte becomes the probe address (the instruction has not run; a partly done rep
  string op restarts from its updated registers, as after an interrupt), at the jump back it
  becomes the original next instruction, at a branch stub the branch target. For SIGILL,
  SIGFPE and SIGTRAP (whose si_addr is the instruction) si_addr is mapped the same way.
"""

from __future__ import annotations

import signal
import struct
from typing import TYPE_CHECKING, Any, Iterable

from capstone import x86_const as X

from .. import kernel
from .. import xol as planner
from ..errors import StepperError
from ..kernel import RIP
from ..xol_area import AREA_SIZE, XolArea
from .base import Ops
from .xol import XolOps

if TYPE_CHECKING:  # pragma: no cover
    import emu

    from ..records import Breakpoint

#: How far an area may be from a probe and still serve it (±2 GiB, less a margin for the
#: object's own size: the displacement is re-checked by the planner anyway).
REACH = (1 << 31) - (64 << 20)
_JMP_ABS = b"\xff\x25\x00\x00\x00\x00"  # jmp qword ptr [rip+0]; the 8-byte target follows
_ADDR_SIGNALS = (signal.SIGILL, signal.SIGFPE, signal.SIGTRAP)
#: What can set TF in user mode (the SDM: TF is changed by popf and by iret): popf, every size;
#: iret also does, but it is not run out of line at all (stepper.xol refuses far transfers),
#: and rt_sigreturn is a syscall (never boosted).
_SETS_TF = (X.X86_INS_POPF, X.X86_INS_POPFD, X.X86_INS_POPFQ)


def boost_refusal(insn: "emu.Instruction", plan: planner.XolPlan) -> str | None:
    """Why `insn`, planned for a slot as `plan`, cannot run there without a trap back."""
    if plan.boost_refusal:
        return plan.boost_refusal
    if insn.capstone.group(X.X86_GRP_FPU):
        return "x87 instruction: the FPU records its address (fnstenv/fxsave would show the slot)"
    if insn.capstone.id in _SETS_TF:
        return ("popf may set TF: the CPU would trap after the slot's jump back, one SIGTRAP "
                "the program never raised")
    return None


def slot_code(plan: planner.XolPlan) -> bytes:
    """The plan's slot bytes with the jump back to the original next instruction after the
    copied instruction (where plain XOL has int3 bytes and relies on the single-step trap)."""
    insn = plan.instruction
    code = bytearray(plan.code)
    at = insn.length
    rel = insn.next_address - (plan.slot_address + at + 5)
    if -(1 << 31) <= rel < (1 << 31):
        jump = b"\xe9" + struct.pack("<i", rel)
    else:
        jump = _JMP_ABS + struct.pack("<Q", insn.next_address)
    if at + len(jump) > planner.STUB_OFFSET:  # pragma: no cover - 15 + 14 <= STUB_OFFSET
        raise StepperError(f"no room for the jump back after {insn.text}")
    code[at:at + len(jump)] = jump
    return bytes(code)


class BoostOps(Ops):
    """A hit points RIP at the probe's slot and continues: one trap. Until the slot exists
    (`Boost.give_slot`), and for good when boosting is refused, hits go to plain XOL."""

    def __init__(self, insn: "emu.Instruction") -> None:
        self.insn = insn
        self.slot: int | None = None
        self.refused = False
        self.note = "boost: slot not written yet"
        self.xol = XolOps(insn)

    @property
    def name(self) -> str:  # type: ignore[override]
        return "xol" if self.refused else "boost"

    def hit(self, p, t, bp: "Breakpoint"):
        if self.refused or t.tf:  # t.tf: the engine's XOL step delivers the program's trap
            return self.xol.hit(p, t, bp)
        slot = self.slot
        if slot is None:
            p.boost.give_slot(self, t.tid)
            if self.slot is None:
                return self.xol.hit(p, t, bp)  # boosting refused just now (note says why)
            slot = self.slot
        t.regs[RIP] = slot
        kernel.setregs(t.tid, t.regs)
        bp.stats.boost += 1
        return None

    def refuse(self, reason: str) -> None:
        """Step with plain XOL from now on, saying why."""
        self.refused = True
        self.note = f"not boosted: {reason}"


class Boost:
    """The registry of boost areas and probe slots of one traced process, owned by it from
    its creation; an area is mapped only when a probe needs a slot."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.areas: list[XolArea] = []
        self.plans: dict[int, planner.XolPlan] = {}  # slot address -> plan
        self._bounds: list[tuple[int, int]] = []
        self._regs = kernel.new_regs()

    # --- insertion ------------------------------------------------------------------------

    def _area_near(self, address: int, tid: int) -> XolArea:
        for area in self.areas:
            if area.address is not None and abs(area.address - address) < REACH:
                return area
        s = self.session
        area = XolArea(s.pid, s.exe, s.mem, planner.SLOT_SIZE, near=address)
        area.map(tid)
        self.areas.append(area)
        assert area.address is not None
        self._bounds.append((area.address, area.address + AREA_SIZE))
        return area

    def prepare(self, bp: "Breakpoint") -> None:
        """Write `bp`'s boost slot now if it is boosted and a stopped thread can map the area
        (before `run`, or from a callback); otherwise its first hit does it."""
        if isinstance(bp.ops, BoostOps):
            for t in self.session.threads.values():
                if not t.running:
                    return self.give_slot(bp.ops, t.tid)

    def give_slot(self, ops: BoostOps, tid: int) -> None:
        """Plan, write and record `ops`' slot, or make it refuse boosting, saying why."""
        if ops.slot is not None or ops.refused:
            return
        insn = ops.insn
        try:
            area = self._area_near(insn.address, tid)
            slot = area.reserve()
        except StepperError as e:
            return ops.refuse(str(e))
        plan = planner.prepare(insn, slot)
        reason = boost_refusal(insn, plan)
        if reason is not None:
            area.unreserve(slot)
            return ops.refuse(reason)
        area.load(slot, slot_code(plan))
        self.plans[slot] = plan
        ops.slot = slot
        ops.note = f"boosted: {plan.rewrite}"

    # --- stops ----------------------------------------------------------------------------

    def locate(self, address: int) -> planner.XolPlan | None:
        """The plan of the boost slot containing `address`, if any."""
        for start, end in self._bounds:
            if start <= address < end:
                return self.plans.get(address - (address - start) % planner.SLOT_SIZE)
        return None

    def map_back(self, tid: int, sig: int = 0, regs=None) -> planner.XolPlan | None:
        """If stopped thread `tid` is inside a slot, move it to the equivalent place in the
        original stream and, for a signal-delivery stop of `sig`, fix si_addr. Returns the
        slot's plan when the thread was moved (its registers are then in `regs`)."""
        regs = self._regs if regs is None else regs
        kernel.getregs(tid, regs)
        rip = regs[RIP]
        plan = self.locate(rip)
        if plan is None:
            return None
        regs[RIP] = plan.original_address(rip)
        kernel.setregs(tid, regs)
        info = kernel.siginfo_if_any(tid) if sig else None
        if info is not None:
            _fix_siginfo(tid, plan, rip, sig, info)
        return plan

    @staticmethod
    def fix_siginfo(tid: int, plan: planner.XolPlan, rip: int, sig: int, info) -> None:
        """si_addr of a kernel-sent SIGILL/SIGFPE/SIGTRAP raised in a slot, mapped back."""
        _fix_siginfo(tid, plan, rip, sig, info)

    def inherited(self, child: Any) -> "Boost":
        """The slots as a forked (or vforked) child has them: same addresses, same bytes."""
        copy = Boost(child)
        copy.areas = [area.inherited(child.pid, child.mem) for area in self.areas]
        copy.plans = dict(self.plans)
        copy._bounds = list(self._bounds)
        return copy

    # --- leaving --------------------------------------------------------------------------

    def leave(self, stopped: Iterable, unmap: bool = True) -> None:
        """Detach: move every (stopped) thread out of the slots, then unmap the areas."""
        threads = list(stopped)
        for t in threads:  # their steps were settled by the detach
            held, t.boost_held = t.boost_held, None
            for info in held or ():
                try:
                    kernel.tgkill(self.session.pid, t.tid, info.signo)
                except StepperError:
                    pass
        for t in threads:
            try:
                self.map_back(t.tid)
            except StepperError:
                pass
        if threads and unmap:
            for area in self.areas:
                try:
                    area.unmap(threads[0].tid)
                except (StepperError, OSError):
                    pass
        self.areas, self._bounds, self.plans = [], [], {}


def _fix_siginfo(tid: int, plan: planner.XolPlan, rip: int, sig: int, info) -> None:
    """si_addr of a kernel-sent SIGILL/SIGFPE/SIGTRAP is the faulting instruction (the slot):
    the program must see the original address. A user-sent signal's siginfo holds a pid
    there (si_code <= 0), and a SIGSEGV's si_addr is a data address: both left alone."""
    if info.code <= 0 or not (sig in _ADDR_SIGNALS or info.addr == rip):
        return
    original = plan.original_address(info.addr)
    if original != info.addr:
        info.addr = original
        kernel.setsiginfo(tid, info)
