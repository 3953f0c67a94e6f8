"""Stop the world and restart it: what a debugger's `cont()` does around the tracer's loop.

Stopping reuses the detach's way of bringing a thread to a stop (stepper.detach: SIGSTOP by
tgkill, the thread's stops meanwhile handled, a step in progress completed at its trap or
abandoned for the SIGSTOP), so a thread that was in the middle of an out-of-line step is seen
at the breakpoint's ORIGINAL address, never in the XOL area. A thread stopped inside a boost
slot is moved back to the equivalent place of the original code; one put back on the probe
hits it again when it resumes, and that re-hit is recognised (stepper.stepping.abandoned),
not counted twice nor stopped at again. A thread that reaches another breakpoint while the
others are being stopped is put back on it: it hits it again, and stops there, at the next
resume. Nothing is unmapped and no breakpoint removed.
"""

from __future__ import annotations

from typing import Any

from . import detach, kernel, stepping
from .errors import StepperError
from .kernel import RIP, RSP
from .records import Thread


def stop_everything(root: Any) -> None:
    """Bring every thread of every live process of `root`'s tree to a stop, out of any
    step and boost slot, with its registers read into `t.regs`."""
    for p in root.tree():
        if p.closed:
            continue
        steps = {t.tid: t.stepping.bp for t in p.threads.values() if t.stepping is not None}
        before = {id(bp): bp.stats.abandoned for bp in steps.values()}
        threads = detach.stop_all(p, maybe_lost=False)  # the loop returned normally
        if p.boost.areas:
            _out_of_boost_slots(p, threads)
        for t in threads:
            t.running = False
            try:
                kernel.getregs(t.tid, t.regs)
            except StepperError:
                continue
            bp = steps.get(t.tid)
            if bp is not None and t.regs[RIP] == bp.address:
                _mark_rehit(t, bp.address)  # abandoned (and uncounted) by the stop
                before[id(bp)] += 1
        for bp in {id(bp): bp for bp in steps.values()}.values():
            # A step the SIGSTOP found already past its instruction was counted abandoned,
            # but it ran: it is a hit (only the threads put back on it will hit again).
            ran = bp.stats.abandoned - before[id(bp)]
            if ran > 0:
                bp.stats.abandoned -= ran
                bp.stats.hits += ran


def _mark_rehit(t: Thread, address: int) -> None:
    """`t` was put back on the breakpoint at `address` before its instruction ran: its hit
    again at resume is that same hit (stepper.stepping.returning), not a new one."""
    if t.rehit is None:
        t.rehit = []
    t.rehit.append((address, t.regs[RSP]))


def _out_of_boost_slots(p: Any, threads: list[Thread]) -> None:
    for t in threads:
        held, t.boost_held = t.boost_held, None
        for info in held or ():  # signals held for a slot's step: pending again
            try:
                kernel.tgkill(p.pid, t.tid, info.signo)
            except StepperError:
                pass
        stepping.end_quiet(t)
        try:
            plan = p.boost.map_back(t.tid, 0, t.regs)
        except StepperError:
            continue
        if plan is not None and t.regs[RIP] == plan.instruction.address:
            bp = p.breakpoints.by_address.get(plan.instruction.address)
            if bp is not None:
                stepping.abandoned(t, bp)  # the re-hit at resume is this hit, not a new one


def stopped_threads(root: Any) -> list[Thread]:
    """Every thread of the tree that is stopped under us (not running, not fresh)."""
    return [t for p in root.tree() if not p.closed for t in list(p.threads.values())
            if not t.running and not t.fresh]
