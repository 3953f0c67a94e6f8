"""The tracer's loop: the one `waitpid` of the engine, and what each decoded stop means.

`run(root)` resumes every thread of the traced tree and handles stops until the root
process has exited or a detach was requested. A breakpoint hit is recognised first, on the
raw status, and handled inline (the hot path): GETREGS, the callback, `ops.hit`, then the
loop acts on the ops' verdict (resume, or single-step the Step they prepared). Every other
stop is decoded (stepper.stops) and dispatched: a ptrace event (clone, fork, vfork, exec), a
thread's first stop, our SIGSTOP, a stop in the middle of a step (stepper.stepping), or the
program's own signal, passed through. Step ops never resume a thread; this module does.
"""

from __future__ import annotations

import errno
import os
import signal
import threading
import time
from typing import Any

from . import endings, kernel, placement, returns, sigtrap, stepping, stops, watchpoints
from .errors import StepperError
from .kernel import EFLAGS, RIP, SI_KERNEL, TF, WALL, PtraceFailed
from .records import Breakpoint, ExitStatus, Hit, Regs, Step, Thread

SIGTRAP = signal.SIGTRAP
SIGSTOP = signal.SIGSTOP


def run(root: Any) -> ExitStatus:
    """Resume the program and handle its stops until it has exited, or until a detach is
    requested (then the program runs on untraced: ExitStatus(detached=True))."""
    if root.root is not root:
        raise StepperError("run() belongs to the first traced process")
    if root.closed:
        raise StepperError(f"process {root.pid} is no longer traced")
    start = time.perf_counter()
    root.loop_thread = threading.get_ident()
    restore = endings.detach_on_signals(root)
    root.follower = placement.Follower(root.pid, root.placement).start()
    try:
        for t in list(root.family.values()):
            if not t.running:
                stepping.resume(t)
        loop(root)
        if root.detach_requested:
            root.abandon()
            if root.interrupted:
                raise KeyboardInterrupt  # Ctrl-C propagates once the program is let go
            if root.exit is not None:
                return root.exit  # it ended while being let go
            return ExitStatus(None, None, True)
    except BaseException:
        root.abandon()
        raise
    finally:
        root.follower.end()
        restore()
        root.loop_thread = None
        root.wall_s += time.perf_counter() - start
    for child in root.tree()[1:]:  # descendants still running when the program ended
        if child.threads and not child.closed:
            child.abandon()
    root.close()
    assert root.exit is not None
    return root.exit


def loop(root: Any) -> None:
    family = root.family
    mine = root.threads
    ptrace, GETREGS, CONT, failed = kernel.ptrace, kernel.GETREGS, kernel.CONT, kernel.failed
    returning, single_step = stepping.returning, stepping.single_step
    waitpid, wifstopped = os.waitpid, os.WIFSTOPPED
    stopped_trap = stops.TRAP_STATUS
    follower = root.follower
    seen, missed, POLL = follower.seen, follower.missed, WALL | os.WNOHANG
    while mine and not root.detach_requested and not root.halt:
        if follower.yielding:  # the stop is usually there: the thread ran on our CPU
            tid, status = waitpid(-1, POLL)
            if not tid:
                missed()
                tid, status = waitpid(-1, WALL)
        else:
            tid, status = waitpid(-1, WALL)
        seen(tid)
        t = family.get(tid)
        if t is None:
            unknown(root, tid, status)
            continue
        t.running = False
        p = t.session
        try:
            if status == stopped_trap and t.stepping is None:
                regs = t.regs
                if ptrace(GETREGS, tid, 0, regs) == -1:
                    failed("PTRACE_GETREGS", tid)
                address = regs[RIP] - 1
                bp = p.breakpoints.by_address.get(address)
                if bp is not None and (not (regs[EFLAGS] & TF or p.watch_exec)
                                       or _is_int3(tid)):
                    regs[RIP] = address
                    t.tf = regs[EFLAGS] & TF
                    bp.stats.hits += 1
                    if t.rehit is not None and returning(t, address):
                        pass  # the re-hit of a step abandoned for a signal: seen already
                    elif root.on_hit is not None:
                        if root.on_hit(p, t, bp):
                            continue  # held (a debugger's stop) or resumed elsewhere
                    else:
                        if bp.observer is not None:
                            bp.observer(tid, regs)
                        if (bp.callback is not None or bp.hook is not None) \
                                and _call(p, bp, t):
                            skipped(p, t, bp)  # the callback moved rip: no step
                            continue
                    if p.trap_handler:  # SIGTRAP caught or ignored: undo a kernel reset
                        sigtrap.after_trap(p, t, bp)
                        go_on(p, t, bp.ops.hit(p, t, bp))
                        sigtrap.flush(p, t)
                    else:  # go_on, inlined: the hot path
                        step = bp.ops.hit(p, t, bp)
                        if step is not None:
                            single_step(t, step)
                        elif t.tf:
                            stepping.resume_stepped(p, t)
                        else:
                            t.running = True
                            if ptrace(CONT, tid, 0, 0) == -1:
                                failed("PTRACE_CONT", tid)
                elif p.returns is not None and p.returns.is_stale(t, address):
                    go_on(p, t, None)  # our return INT3, removed as the thread trapped on it
                else:
                    stopped(p, t, status)  # the program's own trap, passed through
            elif wifstopped(status):
                stopped(p, t, status)
            else:
                p.gone(t, status)
        except PtraceFailed as e:
            if e.errno != errno.ESRCH:
                raise
            t.running = True  # killed meanwhile: its exit is reported next


def go_on(p: Any, t: Thread, step: Step | None) -> None:
    """Act on a hit's verdict: single-step the Step the ops prepared, or resume the thread
    (the instruction ran; a program running with TF gets its trap)."""
    if step is not None:
        stepping.single_step(t, step)
    elif t.tf:
        stepping.resume_stepped(p, t)
    else:
        t.running = True
        kernel.cont(t.tid, 0)


_regs_at = Regs.at
_hit_at = Hit.at


def make_hit(p: Any, bp: Breakpoint, t: Thread) -> Hit:
    """What a callback gets: writable registers (stepper.returns.write_back applies them),
    over a copy of the thread's buffer taken now and decoded as they are read
    (stepper.hit_regs)."""
    return _hit_at(t.tid, bp.address, _regs_at(t.regs), p.read_memory, p)


def _call(p: Any, bp: Breakpoint, t: Thread) -> bool:
    """Under run(): the breakpoint's hook (return breakpoints, stepper.returns) and callback.
    What they wrote in hit.regs is applied to the thread; True when that moved rip (skip the
    step)."""
    hit = make_hit(p, bp, t)
    if bp.hook is not None:
        bp.hook(p, bp, t, hit)
    if bp.callback is not None:
        bp.callback(hit)
    return hit.regs.written and returns.write_back(t, hit.regs, bp.address)


def skipped(p: Any, t: Thread, bp: Breakpoint) -> None:
    """Resume `t` where a callback sent it, its displaced instruction not run."""
    if p.trap_handler:
        sigtrap.after_trap(p, t, bp)
        go_on(p, t, None)
        sigtrap.flush(p, t)
    else:
        go_on(p, t, None)


def stopped(p: Any, t: Thread, status: int) -> None:
    """Every stop but a breakpoint hit: decoded, then dispatched."""
    if t.quiet_mask is not None:
        stepping.end_quiet(t)  # the program's own signal mask, before anything looks at it
    stop = stops.decode(status)
    sig, event = stop.signal, stop.event
    if event is not None:
        if event == "clone":
            cloned(p, kernel.geteventmsg(t.tid))
        elif event == "fork" or event == "vfork":
            forked(p, t, kernel.geteventmsg(t.tid), event == "vfork")
        elif event == "exec":
            p.exec(t)
            if p.parent is not None and p.children_mode == "detach":
                return p.abandon()  # a vfork child that exec'd: its own image, let go
            if p.root.on_exec is not None:
                p.root.on_exec(p)
        if p.root.on_stop is not None and p.root.on_stop(p, t, event, 0):
            return None  # held at the event: a debugger's stop
        return stepping.resume(t)
    if sig == SIGSTOP and t.fresh:
        return first_stop(p, t)
    if sig == SIGSTOP and t.stop_sent:  # ours: a detach was requested
        t.stop_sent = False
        if t.stepping is not None:
            stepping.settle(p, t, SIGSTOP)
        return None
    if sig == SIGTRAP and p.watchpoints and t.stepping is None and t.boost_held is None:
        hits = watchpoints.fired(p, t)  # reported (callbacks called); not the program's
        on_stop = p.root.on_stop
        if hits and not hits[0].single_step and on_stop is not None \
                and on_stop(p, t, "watchpoint", 0, hits):
            return None  # held after the access: a debugger's stop
        if hits and not hits[0].single_step:
            return stepping.resume(t)
    if p.boost.areas and t.stepping is None:
        sig = stepping.boost_stopped(p, t, sig)  # a RIP in a boost slot is mapped back first
        if sig is None:
            return None  # stepped on: a signal waits for the slot's instruction
    if t.stepping is not None:
        return stepping.step_stopped(p, t, sig)
    if p.root.on_stop is not None and p.root.on_stop(p, t, "signal", sig):
        return None  # held with its signal: a debugger's stop
    if sig == SIGTRAP:
        return sigtrap.deliver(p, t)  # its own SIGTRAP: its handler is noted on the way
    stepping.resume(t, sig)  # the program's signal, passed through unchanged


def first_stop(p: Any, t: Thread) -> None:
    """The initial stop of a new thread or child process."""
    t.fresh = False
    if p.watchpoints:  # a new thread starts with clear debug registers
        watchpoints.apply(p, t)
    step = t.stepping
    if step is not None:  # forked in the middle of an out-of-line syscall: finish it
        t.stepping = None
        step.ops.complete(p, t, step.bp, step.token)
    if t.tid == p.pid and p.parent is not None and p.children_mode == "detach" and not p.vfork:
        return p.abandon()
    stepping.resume(t)


def cloned(p: Any, tid: int) -> None:
    """A thread was born in `p`: followed, and its first stop handled if seen already."""
    if p.cloned(tid):
        replay(p.root, tid)


def forked(p: Any, t: Thread, pid: int, vfork: bool) -> None:
    """`t` forked child process `pid`: followed, the on_fork hook told before it runs."""
    child = p.forked(t, pid, vfork)
    if child is None:
        return
    if p.root.on_fork is not None:
        p.root.on_fork(p, child)
    replay(p.root, pid)


def replay(root: Any, tid: int) -> None:
    """A stop reaped before its thread was known: handle it now."""
    status = root.early.pop(tid, None)
    if status is not None:
        t = root.family[tid]
        t.running = False
        stopped(t.session, t, status)


def unknown(root: Any, tid: int, status: int) -> None:
    """A stop of a thread or child whose clone/fork event has not been seen yet: its
    initial stop. Kept until the event says whose it is."""
    if os.WIFSTOPPED(status):
        root.early[tid] = status


def _is_int3(tid: int) -> bool:
    """A SIGTRAP with TF set may be the program's own single-step trap: only an INT3 has
    si_code SI_KERNEL."""
    return kernel.getsiginfo(tid).code == SI_KERNEL
