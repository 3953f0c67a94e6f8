"""The engine's public face: one traced process tree, every thread followed, each thread's
stops handled on their own (no stop-the-world: breakpoints stay in memory while other threads
run).

Lifecycle: `Session.spawn(argv)` forks and execs the program under ptrace (stepper.spawn)
and stops it at the exec trap, before any of its instructions ran; breakpoints
are added then; `run()` resumes it and handles stops until every thread is gone. If the tracer
is interrupted or raises, `abandon()` restores every INT3 byte, brings any thread that is in a
step back to the original instruction stream, unmaps the XOL area and detaches every thread,
so the program carries on untraced, unharmed.

The work is done below, one concern per module (docs/engine.md has the map): the per-process
state (stepper.process, which a Session is), the loop (stepper.tracer), signals during a step
(stepper.stepping), leaving (stepper.detach), Ctrl-C and SIGTERM (stepper.endings).

Under fire (docs/under_fire.md):
- A signal that stops a thread in the middle of an out-of-line step abandons the step: the
  thread is put back at the breakpoint address (as if it had not reached the instruction yet)
  and the signal is delivered there; the breakpoint is hit again when the handler returns.
  `stats.hits` counts completed steps only, and the callback is not called a second time for
  that re-hit (the thread is recognised by address and stack pointer).
- A program that runs with TF set gets a TRAP_TRACE SIGTRAP after a probed instruction exactly
  as the CPU would have raised it; a trap that is not our INT3 is passed through untouched.
- Children (fork, vfork, clone without CLONE_THREAD) are followed by default: each is a
  Session of its own (own breakpoints, own hit counts, `children`), fed by the root's loop.
  With `children="detach"` their breakpoints are removed and they are let go instead (a vfork
  child shares its parent's memory: it is followed until it execs or exits).
- `attach(pid)` takes a running process (every thread, including those created meanwhile);
  `request_detach()` (any thread, a signal handler, a callback) makes `run()` leave the
  program running untraced and return ExitStatus(detached=True).
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
from typing import Sequence

from . import detach, environment, kernel, procfs, sigtrap, spawn, tracer
from .errors import StepperError
from .kernel import WALL
from .process import CHILDREN, TracedProcess
from .records import ExitStatus

SIGSTOP = signal.SIGSTOP
_FOLLOW = kernel.O_FOLLOW

__all__ = ["Session", "CHILDREN"]


class Session(TracedProcess):
    """One traced process and its breakpoints (stepper.process); the first (root) session
    runs the loop for every process of the tree: followed children are sessions of their own,
    reached through the shared `family` map (tid -> Thread, whose `.session` owns it)."""

    # --- starting -----------------------------------------------------------------------

    @classmethod
    def spawn(cls, argv: Sequence[str], mode: str = "auto", env: dict | None = None,
              children: str = "follow") -> "Session":
        """Start `argv` under trace, stopped before its first instruction."""
        if not argv:
            raise StepperError("no program given")
        if children not in CHILDREN:
            raise StepperError(f"unknown children policy {children!r}: choose follow or detach")
        if env is None:
            env = environment.inherited()   # not the locale Python coerced for itself
        pid = _create_child(list(argv), env)
        _, status = os.waitpid(pid, WALL)
        if not os.WIFSTOPPED(status):
            raise StepperError(f"{argv[0]}: ended before it could be traced")
        kernel.setoptions(pid, _FOLLOW | kernel.O_EXITKILL)
        return cls(pid, mode, children)

    @classmethod
    def attach(cls, pid: int, mode: str = "auto", children: str = "follow") -> "Session":
        """Trace running process `pid`: every thread, including threads created while
        attaching (the task list is read again until no new thread appears; an attached
        thread stays stopped, so only unattached ones can add threads). No EXITKILL: if the
        tracer dies, the kernel detaches and the program goes on."""
        if children not in CHILDREN:
            raise StepperError(f"unknown children policy {children!r}: choose follow or detach")
        if not isinstance(pid, int) or pid <= 0:
            raise StepperError(f"{pid!r} is not a process id")
        if pid == os.getpid():
            raise StepperError(f"process {pid} is stepper itself: it cannot trace itself")
        tgid = procfs.tgid_of(pid)
        if tgid != pid:
            raise StepperError(f"{pid} is a thread of process {tgid}: attach to {tgid}")
        done: set[int] = set()
        try:
            while True:
                new = sorted(procfs.tasks(pid) - done, key=lambda tid: tid != pid)
                if not new:
                    break
                for tid in new:
                    done.add(tid)
                    if not _attach_thread(pid, tid) and tid == pid:
                        raise StepperError(f"process {pid} ended while stepper attached to it")
            session = cls(pid, mode, children)
        except BaseException:
            for tid in done:
                try:
                    kernel.detach(tid, 0)
                except StepperError:
                    pass
            raise
        session.attached = True
        sigtrap.learn_at_attach(session)
        for tid in sorted(done - {pid}):
            if os.path.exists(f"/proc/{pid}/task/{tid}"):
                session.add_thread(tid)
        return session

    # --- running and leaving ------------------------------------------------------------

    def run(self) -> ExitStatus:
        """Resume the program and handle its stops until it has exited, or until
        `request_detach()` (then the program runs on untraced: ExitStatus(detached=True))."""
        return tracer.run(self)

    def request_detach(self) -> None:
        """Leave the program running untraced. Callable from any thread, from a signal
        handler or from a callback while `run()` is running: `run()` then detaches at its
        next step and returns ExitStatus(detached=True). Outside `run()`, detaches now."""
        detach.request_detach(self)

    def abandon(self) -> None:
        """Leave the program (and every followed descendant) running untraced and unharmed:
        every INT3 byte restored, every thread out of any step and back in the original
        stream, the XOL areas unmapped (only once no thread of the tree can be inside one),
        every thread detached. Safe to call more than once, and after the program ended."""
        detach.abandon(self)

    def kill(self) -> None:
        """End the program and its followed children (used when setting up failed)."""
        detach.kill(self)


def _attach_thread(pid: int, tid: int) -> bool:
    """PTRACE_ATTACH one thread and wait for its attach SIGSTOP (signals that come first are
    delivered to it, so none is lost); False if the thread is gone."""
    if kernel._ptrace(kernel.ATTACH, tid, 0, 0) == -1:
        err = ctypes.get_errno()
        if err == errno.ESRCH:
            return False
        if err == errno.EPERM and procfs.thread_state(tid) in ("Z", "X", None):
            if tid == pid:
                raise StepperError(f"cannot attach to process {pid}: its main thread has "
                                   f"exited (a zombie thread cannot be traced)")
            return False  # an exiting thread refuses PTRACE_ATTACH with EPERM: it is gone
        if err == errno.EPERM:
            raise StepperError(f"cannot attach to process {pid}: not permitted (not yours, "
                               f"already traced, or forbidden by kernel.yama.ptrace_scope)")
        raise StepperError(f"cannot attach to process {pid}: {os.strerror(err)}")
    while True:
        try:
            _, status = os.waitpid(tid, WALL)
        except ChildProcessError:
            return False
        if not os.WIFSTOPPED(status):
            return False
        sig = os.WSTOPSIG(status)
        if sig == SIGSTOP:
            break
        kernel.cont(tid, sig)
    kernel.setoptions(tid, _FOLLOW)
    return True


def _create_child(argv: list[str], env: dict) -> int:
    """Fork and exec under PTRACE_TRACEME. Signals the tracer ignores (Python ignores SIGPIPE
    and SIGXFSZ) would stay ignored across exec, so they are reset around the fork: the
    program must start with the dispositions it would have had unprobed."""
    saved = {}
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        saved[sig] = signal.signal(sig, signal.SIG_DFL)
    try:
        return spawn.traced_child(argv, env)
    except OSError as e:
        raise StepperError(f"cannot run {argv[0]}: {e}") from None
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
