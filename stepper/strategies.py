"""Per-instruction step ops, chosen once when a breakpoint is inserted (as uprobes does).

A breakpoint's instruction is never taken out of memory while threads run (except by the
`reinsert` baseline). On a hit the session calls `ops.hit(session, thread, bp)`; an op either
finishes the instruction itself and resumes the thread, or starts a single-step and leaves a
step record on the thread, after which the session calls `complete` (the step trap arrived)
or `abort` (a signal arrived instead). The hit path only calls these verbs.

- EmulateOps: the emu plan (compiled at insertion with keys = ptrace buffer indices, and the
  host CPU as flags oracle, so the flags the SDM leaves undefined are this CPU's: see
  stepper.host_flags) runs on the live thread. A MemoryFault (a genuine fault, or a push
  that must grow the stack) falls back, for that hit, to executing the instruction on the
  CPU; so does an `.atomic` instruction while another thread may run, because the tracer's
  read and write are two accesses that another thread could slip between.
- XolOps: copy (rewritten by stepper.xol) into the thread's own slot, single-step, fix up.
- ReinsertOps: restore the byte, single-step in place, put the INT3 back. Only a baseline:
  another thread running past the address meanwhile misses the breakpoint.
- BoostOps (stepper.boost): the probe's own slot ends with a jump back, so a hit is one trap.

Which ops a site gets is stepper.policy's decision, made above this module and stepper.boost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import emu
from emu import MemoryFault, Unsupported

from . import host_flags, kernel, live_vector, xol
from .records import Step

if TYPE_CHECKING:  # pragma: no cover
    from .records import Breakpoint
    from .records import Thread
    from .session import Session

_REG_ITEMS = tuple(kernel.REG_INDEX.items())


def regs_dict(buf) -> dict[str, int]:
    """The emu-named registers of a ptrace buffer, as a dict (cold paths: XOL, callbacks)."""
    return {name: buf[i] for name, i in _REG_ITEMS}


def store_regs(regs: dict[str, int], buf) -> None:
    for name, i in _REG_ITEMS:
        buf[i] = regs[name]


class Ops:
    """The verbs of one step strategy; one instance per breakpoint."""

    name = "?"

    def hit(self, s: "Session", t: "Thread", bp: "Breakpoint") -> None:
        raise NotImplementedError

    def complete(self, s: "Session", t: "Thread", bp: "Breakpoint", token) -> bool:
        """The single-step trap arrived: fix the thread up (the session resumes it).
        False: the step is not over (a rep iteration); the session steps again."""
        return True

    def abort(self, s: "Session", t: "Thread", bp: "Breakpoint", token) -> None:
        """A signal stopped the step: make the thread look as if it were at bp.address."""


class EmulateOps(Ops):
    name = "emulate"

    def __init__(self, insn: emu.Instruction, fallback: Ops) -> None:
        try:
            self.plan = emu.compile(insn, kernel.REG_INDEX, host_flags.get())
            self.vector = False
        except Unsupported:  # it needs xmm registers: the FXSAVE image is fetched per hit
            self.plan = live_vector.compile_vector_plan(insn)
            self.vector = True
        self.atomic = insn.atomic
        self.fallback = fallback

    def hit(self, s, t, bp) -> None:
        if self.atomic and len(s.threads) > 1:
            return self._fall_back(s, t, bp, "atomic instruction while other threads run")
        try:
            if self.vector:
                live_vector.run_vector_plan(self.plan, t.tid, t.regs, t.live.vm)
            else:
                self.plan(t.live)
        except MemoryFault as e:
            return self._fall_back(s, t, bp, f"memory fault ({e.access})")
        except Unsupported as e:
            return self._fall_back(s, t, bp, f"unsupported: {e.reason}")
        bp.stats.emulate += 1
        kernel.setregs(t.tid, t.regs)
        if t.tf:  # the program single-steps itself: it expects a trap after this instruction
            return s.resume_stepped(t)
        t.running = True
        kernel.cont(t.tid, 0)

    def _fall_back(self, s, t, bp, reason: str) -> None:
        # The plan left the state untouched on failure; rip is still bp.address.
        fallbacks = bp.stats.fallbacks
        fallbacks[reason] = fallbacks.get(reason, 0) + 1
        self.fallback.hit(s, t, bp)


class XolOps(Ops):
    """Out-of-line step in the thread's own slot, through the planner stepper.xol."""

    name = "xol"

    def __init__(self, insn: emu.Instruction) -> None:
        self.insn = insn
        self._plans: dict[int, object] = {}  # slot address -> XolPlan

    def _plan(self, slot: int):
        plan = self._plans.get(slot)
        if plan is None:
            plan = self._plans[slot] = xol.prepare(self.insn, slot)
        return plan

    def hit(self, s, t, bp) -> None:
        area = s.xol_area(t)
        slot = area.slot(t.tid)
        plan = self._plan(slot)
        area.load(slot, plan.code)
        regs = regs_dict(t.regs)
        token = plan.pre(regs)
        store_regs(regs, t.regs)
        kernel.setregs(t.tid, t.regs)
        bp.stats.xol += 1
        s.single_step(t, Step(self, bp, (plan, slot, token)))

    def complete(self, s, t, bp, token) -> bool:
        plan, slot, inner = token
        kernel.getregs(t.tid, t.regs)
        regs = regs_dict(t.regs)
        if plan.in_progress(regs) and plan.kind == "plain":
            # A rep string op traps after every iteration with RIP still at the slot: step
            # on rather than re-hit the breakpoint (which would count a hit per iteration).
            return False
        plan.post(regs, inner, s.mem.read, s.mem.write)
        store_regs(regs, t.regs)
        kernel.setregs(t.tid, t.regs)
        return True

    def abort(self, s, t, bp, token) -> None:
        plan, slot, inner = token
        kernel.getregs(t.tid, t.regs)
        regs = regs_dict(t.regs)
        plan.abort(regs, inner, s.mem.read, s.mem.write)
        store_regs(regs, t.regs)
        kernel.setregs(t.tid, t.regs)
        # SIGILL/SIGFPE/SIGTRAP carry the faulting RIP in si_addr: the program must see the
        # original instruction's address, never the slot's.
        info = kernel.getsiginfo(t.tid)
        original = plan.original_address(info.addr)
        if original != info.addr:
            info.addr = original
            kernel.setsiginfo(t.tid, info)


class ReinsertOps(Ops):
    """Restore the original byte, step in place, write the INT3 back."""

    name = "reinsert"

    def hit(self, s, t, bp) -> None:
        s.mem.write(bp.address, bp.original)
        kernel.setregs(t.tid, t.regs)
        bp.stats.reinsert += 1
        s.single_step(t, Step(self, bp))

    def complete(self, s, t, bp, token) -> bool:
        if bp.inserted:
            s.mem.write(bp.address, b"\xcc")
        return True

    def abort(self, s, t, bp, token) -> None:
        self.complete(s, t, bp, token)
