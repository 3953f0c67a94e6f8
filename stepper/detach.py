"""Leaving the program: detach (on request, on Ctrl-C or SIGTERM, or when the tracer raises),
and kill.

`abandon(p)` leaves the process and every followed descendant running untraced and unharmed:
every INT3 byte restored, every thread brought to a stop and out of any step (back in the
original instruction stream), the XOL and boost areas unmapped only once no thread of the
tree can be inside one, every thread detached, the leader last. Threads keep running while
the others are stopped one by one; their stops meanwhile (a signal, a clone, a fork, an
exec) are handled on the way, the program's signals passed on.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from . import kernel, procfs, stepping, stops, tracer, watchpoints
from .errors import StepperError
from .kernel import RIP, WALL
from .records import ExitStatus, Thread

SIGTRAP = signal.SIGTRAP
SIGSTOP = signal.SIGSTOP


def request_detach(p: Any) -> None:
    """Leave the program running untraced. Callable from any thread, from a signal
    handler or from a callback while the loop runs: it then detaches at its next step and
    returns ExitStatus(detached=True). Outside the loop, detaches now."""
    root = p.root
    if root.loop_thread is None:
        return abandon(root)
    root.detach_requested = True
    kick(root)


def kick(root: Any) -> None:
    """Wake the loop's waitpid: a SIGSTOP to one running thread, consumed as ours."""
    for t in list(root.family.values()):
        if t.running and not t.fresh and not t.stop_sent:
            t.stop_sent = True
            try:
                kernel.tgkill(t.session.pid, t.tid, SIGSTOP)
                return
            except StepperError:
                t.stop_sent = False


def abandon(p: Any) -> None:
    """Leave `p` (and every followed descendant) running untraced and unharmed (see the
    module). Safe to call more than once, and after the program ended."""
    stopped: dict[int, tuple[Any, list[Thread]]] = {}
    try:
        while True:
            todo = [s for s in p.tree() if not s.closed and id(s) not in stopped]
            if not todo:
                break
            for s in todo:
                s.breakpoints.restore_all()
                stopped[id(s)] = (s, stop_all(s))
        for s, threads in stopped.values():
            for t in threads:
                try:
                    stepping.end_quiet(t)  # a held step cut short: the program's own mask back
                except StepperError:
                    pass
            if s.boost.areas:  # every thread out of the boost slots, then unmap
                s.boost.leave(threads, unmap=not s.vfork)
            area = s.area
            if threads and area is not None and area.mapped and not s.vfork:
                try:
                    area.unmap(threads[0].tid)
                except (StepperError, OSError):
                    pass
        for s, threads in stopped.values():
            watchpoints.clear_threads(s, threads)  # debug registers outlive a detach
            # The leader last: let go first, it may exit_group at once, and threads still
            # stopped under us would die as zombies only we can reap (the program's exit
            # would then never reach its parent).
            for t in sorted(threads, key=lambda t: t.tid == s.pid):
                try:
                    kernel.detach(t.tid, 0)
                except StepperError:
                    pass
                s.drop_thread(t.tid)
    finally:
        for s, _ in stopped.values():
            s.close()


def stop_all(p: Any, maybe_lost: bool = True) -> list[Thread]:
    """Bring every thread of `p` to a stop, including threads born meanwhile.
    `maybe_lost`: see bring_to_stop."""
    outcome: dict[int, bool] = {}
    while True:
        pending = [t for t in list(p.threads.values()) if t.tid not in outcome]
        if not pending:
            return [p.threads[tid] for tid, ok in outcome.items() if ok and tid in p.threads]
        for t in pending:
            outcome[t.tid] = bring_to_stop(p, t, maybe_lost)


def bring_to_stop(p: Any, t: Thread, maybe_lost: bool = True) -> bool:
    """Stop thread `t` (if running), finish or abort its step; False if it is gone.

    `maybe_lost`: the loop may have been cut short (an exception) between a waitpid and
    the handling of its status, so a "running" thread with nothing pending may in fact sit in
    a trace stop: /proc says (one read per thread). False when the loop returned normally
    (a debugger's cont()): every status it reaped was handled, and the read is saved."""
    try:
        early = p.root.early.pop(t.tid, None)
        if early is not None:
            return wait_for_sigstop(p, t, early)
        if not t.running:
            if t.stepping is not None:
                stepping.settle(p, t)
            else:
                _rewind_interrupted_hit(p, t)
            return True
        tid, status = os.waitpid(t.tid, WALL | os.WNOHANG)
        if not tid:  # nothing pending
            if maybe_lost and procfs.in_trace_stop(t.tid):
                # Its stop was reaped by a waitpid that the interruption cut short: the
                # reason is lost, so take it as a stop before the step or hit completed.
                if t.stepping is not None:
                    stepping.settle(p, t, SIGSTOP)
                else:
                    _rewind_if_ours(p, t)
                return True
            if not (t.fresh or t.stop_sent):  # else a SIGSTOP is on the way already
                t.stop_sent = True
                kernel.tgkill(p.pid, t.tid, SIGSTOP)
            status = None
        return wait_for_sigstop(p, t, status)
    except (StepperError, ChildProcessError):
        p.drop_thread(t.tid)
        return False


def wait_for_sigstop(p: Any, t: Thread, status: int | None) -> bool:
    """Handle `t`'s stops (passing the program's signals on) until our SIGSTOP arrives."""
    while True:
        if status is None:
            status = _next_status(p, t)
        stop = stops.decode(status)
        if not stop.stopped:
            p.drop_thread(t.tid)
            if t.tid == p.pid:
                p.exit = ExitStatus.from_wait(status)
            return False
        sig, event = stop.signal, stop.event
        status = None
        if event is not None:
            if event == "clone":  # a thread born while leaving: detach it too
                tracer.cloned(p, kernel.geteventmsg(t.tid))
            elif event == "fork" or event == "vfork":
                tracer.forked(p, t, kernel.geteventmsg(t.tid), event == "vfork")
            elif event == "exec":
                p.exec(t)
            sig = 0
        elif sig == SIGSTOP and (t.fresh or t.stop_sent):
            t.fresh = t.stop_sent = False
            if t.stepping is not None:
                stepping.settle(p, t, SIGSTOP)
            return True
        elif t.stepping is not None:
            stepping.settle(p, t, sig)
            if sig == SIGTRAP:
                sig = 0
        elif sig == SIGTRAP:
            hits = watchpoints.fired(p, t) if p.watchpoints else []
            if hits and p.root.on_stop is not None:  # a debugger's all-stop: one more Stop
                p.root.on_stop(p, t, "watchpoint", 0, hits)
            if not hits:
                _rewind_if_ours(p, t)
            sig = 0
        if sig and t.stepping is None and p.boost.areas:
            p.boost.map_back(t.tid, sig)
        if sig and p.root.on_stop is not None and p.root.on_stop(p, t, "signal", sig):
            sig = 0  # a debugger's all-stop holds it: delivered when the thread resumes
        if not (t.fresh or t.stop_sent):  # a stop reaped before ours was sent: send it now
            t.stop_sent = True
            kernel.tgkill(p.pid, t.tid, SIGSTOP)
        if t.stepping is not None:
            kernel.singlestep(t.tid, sig)
        else:
            kernel.cont(t.tid, sig)


def _next_status(p: Any, t: Thread) -> int:
    """Wait for `t`'s next stop or exit. A process leader that exited (exit_group, or on
    its own) is reported only once every other thread is reaped, and those exits come to
    us, so waiting for the leader alone could wait forever: for a leader, every thread's
    event is taken here; exits are handled at once, any other event is kept for its
    thread's turn (root.early, as a first stop seen before its clone event)."""
    if t.tid != p.pid:
        return os.waitpid(t.tid, WALL)[1]
    while True:
        tid, status = os.waitpid(-1, WALL)
        if tid == t.tid:
            return status
        other = p.family.get(tid)
        if other is not None and not os.WIFSTOPPED(status):
            other.session.gone(other, status)
        else:
            p.root.early[tid] = status


def _rewind_interrupted_hit(p: Any, t: Thread) -> None:
    """The thread whose hit was being handled when the tracer raised: if its registers
    were not written back yet (the kernel's rip is one past the INT3 and the buffer holds
    the breakpoint address), put it back on the instruction, which then runs natively."""
    now = kernel.new_regs()
    kernel.getregs(t.tid, now)
    address = now[RIP] - 1
    if t.regs[RIP] == address and address in p.breakpoints.by_address:
        now[RIP] = address
        kernel.setregs(t.tid, now)


def _rewind_if_ours(p: Any, t: Thread) -> None:
    """A thread that hit one of our (now removed) INT3s: put it back on the instruction."""
    kernel.getregs(t.tid, t.regs)
    if t.regs[RIP] - 1 in p.breakpoints.by_address:
        t.regs[RIP] -= 1
        kernel.setregs(t.tid, t.regs)


def kill(p: Any) -> None:
    """End the program and its followed children (used when setting up failed)."""
    for s in p.tree():
        try:
            os.kill(s.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        while any(s.threads for s in p.tree()):
            tid, _ = os.waitpid(-1, WALL)
            t = p.family.get(tid)
            if t is not None:
                t.session.drop_thread(tid)
    except ChildProcessError:
        pass
    for s in p.tree():
        s.close()
