"""XolOps: a copy of the instruction, rewritten by the planner (stepper.xol), single-stepped
in the thread's own slot of the XOL area, then fixed up; two traps per hit."""

from __future__ import annotations

import emu

from .. import kernel
from .. import xol as planner
from ..records import Step
from .base import AGAIN, DONE, Ops, regs_dict, store_regs


class XolOps(Ops):
    """Out-of-line step in the thread's own slot, through the planner stepper.xol."""

    name = "xol"

    def __init__(self, insn: emu.Instruction) -> None:
        self.insn = insn
        self._plans: dict[int, object] = {}  # slot address -> XolPlan

    def _plan(self, slot: int):
        plan = self._plans.get(slot)
        if plan is None:
            plan = self._plans[slot] = planner.prepare(self.insn, slot)
        return plan

    def hit(self, p, t, bp) -> Step:
        area = p.xol_area(t)
        slot = area.slot(t.tid)
        plan = self._plan(slot)
        area.load(slot, plan.code)
        regs = regs_dict(t.regs)
        token = plan.pre(regs)
        store_regs(regs, t.regs)
        kernel.setregs(t.tid, t.regs)
        bp.stats.xol += 1
        return Step(self, bp, (plan, slot, token))

    def complete(self, p, t, bp, token) -> bool:
        plan, slot, inner = token
        kernel.getregs(t.tid, t.regs)
        regs = regs_dict(t.regs)
        if plan.in_progress(regs) and plan.kind == "plain":
            # A rep string op traps after every iteration with RIP still at the slot: step
            # on rather than re-hit the breakpoint (which would count a hit per iteration).
            return AGAIN
        plan.post(regs, inner, p.mem.read, p.mem.write)
        store_regs(regs, t.regs)
        kernel.setregs(t.tid, t.regs)
        return DONE

    def abort(self, p, t, bp, token) -> None:
        plan, slot, inner = token
        kernel.getregs(t.tid, t.regs)
        regs = regs_dict(t.regs)
        plan.abort(regs, inner, p.mem.read, p.mem.write)
        store_regs(regs, t.regs)
        kernel.setregs(t.tid, t.regs)
        # SIGILL/SIGFPE/SIGTRAP carry the faulting RIP in si_addr: the program must see the
        # original instruction's address, never the slot's.
        info = kernel.getsiginfo(t.tid)
        original = plan.original_address(info.addr)
        if original != info.addr:
            info.addr = original
            kernel.setsiginfo(t.tid, info)
