"""EmulateOps: the emu plan runs on the live thread; one trap per hit.

The plan is compiled at insertion with keys = ptrace buffer indices, and the host CPU as flags
oracle, so the flags the SDM leaves undefined are this CPU's (stepper.host_flags). A
MemoryFault (a genuine fault, or a push that must grow the stack) falls back, for that hit, to
executing the instruction on the CPU; so does an access to watched memory (the debug
registers see only the CPU's accesses: stepper.watchpoints); so does an `.atomic`
instruction while another thread may run, because the tracer's read and write are two
accesses that another thread could slip between.
"""

from __future__ import annotations

import emu
from emu import MemoryFault, Unsupported

from .. import host_flags, kernel, live_vector, watchpoints
from .base import Ops

_ptrace, SETREGS = kernel.ptrace, kernel.SETREGS


def compile_live(insn: emu.Instruction) -> tuple:
    """(plan, vector) for a live thread, or Unsupported. Plans over general registers run on
    the register buffer; plans that need xmm registers (`vector`) on the thread's FXSAVE
    image, fetched per hit (stepper.live_vector)."""
    try:
        return emu.compile(insn, kernel.REG_INDEX, host_flags.get()), False
    except Unsupported:
        return live_vector.compile_vector_plan(insn), True


class EmulateOps(Ops):
    name = "emulate"

    def __init__(self, insn: emu.Instruction, fallback: Ops, live: tuple | None = None) -> None:
        """`live`: what `compile_live(insn)` returned, when the caller has it already (the
        policy compiles once to decide, and hands the plan over)."""
        self.plan, self.vector = live if live is not None else compile_live(insn)
        self.atomic = insn.atomic
        self.fallback = fallback

    def hit(self, p, t, bp):
        if self.atomic and len(p.threads) > 1:
            return self._fall_back(p, t, bp, "atomic instruction while other threads run")
        try:
            if self.vector:
                live_vector.run_vector_plan(self.plan, t.tid, t.regs, t.live.vm,
                                            p.watchpoints)
            else:
                self.plan(watchpoints.guard(p, t) if p.watchpoints else t.live)
        except watchpoints.WatchedAccess:
            return self._fall_back(p, t, bp, "watched memory")
        except MemoryFault as e:
            return self._fall_back(p, t, bp, f"memory fault ({e.access})")
        except Unsupported as e:
            return self._fall_back(p, t, bp, f"unsupported: {e.reason}")
        bp.stats.emulate += 1
        if _ptrace(SETREGS, t.tid, 0, t.regs) == -1:
            kernel.failed("PTRACE_SETREGS", t.tid)
        return None

    def _fall_back(self, p, t, bp, reason: str):
        # The plan left the state untouched on failure; rip is still bp.address.
        fallbacks = bp.stats.fallbacks
        fallbacks[reason] = fallbacks.get(reason, 0) + 1
        return self.fallback.hit(p, t, bp)
