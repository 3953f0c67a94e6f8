"""The event loop: one traced process, every thread followed, each thread's stops handled on
their own (no stop-the-world: breakpoints stay in memory while other threads run).

Lifecycle: `Session.spawn(argv)` forks and execs the program under ptrace (python-ptrace's
createChild) and stops it at the exec trap, before any of its instructions ran; breakpoints
are added then; `run()` resumes it and handles stops until every thread is gone. If the tracer
is interrupted or raises, `abandon()` restores every INT3 byte, brings any thread that is in a
step back to the original instruction stream, unmaps the XOL area and detaches every thread,
so the program carries on untraced, unharmed.

The hit path (SIGTRAP -> GETREGS -> ops.hit -> SETREGS -> CONT) uses ptrace_lean only.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from . import maps, ptrace_lean, xol
from .breakpoints import Breakpoint, Breakpoints
from .errors import StepperError
from .live import LiveState
from .ptrace_lean import RIP, WALL
from .strategies import regs_dict
from .xol_area import XolArea

SIGTRAP = signal.SIGTRAP
SIGSTOP = signal.SIGSTOP
_EVENT_CLONE_STATUS = (ptrace_lean.EVENT_CLONE << 8) | SIGTRAP
_EVENT_EXEC_STATUS = (ptrace_lean.EVENT_EXEC << 8) | SIGTRAP


class Thread:
    """A traced thread: its register buffer (reused on every hit), the emu State over it,
    and the step in progress, if any (ops, breakpoint, token)."""

    __slots__ = ("tid", "regs", "live", "step", "running", "fresh")

    def __init__(self, tid: int, vm: ptrace_lean.VmAccess) -> None:
        self.tid = tid
        self.regs = ptrace_lean.new_regs()
        self.live = LiveState(tid, self.regs, vm)
        self.step = None
        self.running = False
        self.fresh = False  # created, its initial SIGSTOP not seen yet


@dataclass(frozen=True)
class ExitStatus:
    """How the program ended: `exit_code` (normal exit) or `signal` (killed), the other None."""

    exit_code: int | None
    signal: int | None

    @classmethod
    def from_wait(cls, status: int) -> "ExitStatus":
        if os.WIFSIGNALED(status):
            return cls(None, os.WTERMSIG(status))
        return cls(os.WEXITSTATUS(status), None)


@dataclass(frozen=True)
class Hit:
    """What a breakpoint callback receives: the thread, its registers at the breakpoint
    (rip = the breakpoint address; a copy, changing it changes nothing) and `read`."""

    tid: int
    address: int
    regs: dict[str, int]
    read: Callable[[int, int], bytes]


class Session:
    """One traced process and its breakpoints."""

    def __init__(self, pid: int, mode: str = "auto") -> None:
        self.pid = pid
        self.mode = mode
        self.exe = os.readlink(f"/proc/{pid}/exe")
        self.mem = ptrace_lean.ProcMem(pid)
        self.vm = ptrace_lean.VmAccess(pid)
        self.breakpoints = Breakpoints(pid, self.mem)
        self.threads: dict[int, Thread] = {pid: Thread(pid, self.vm)}
        self.threads_seen = 1
        self.exit: ExitStatus | None = None
        self.wall_s = 0.0
        self._area: XolArea | None = None
        self._closed = False

    # --- starting -----------------------------------------------------------------------

    @classmethod
    def spawn(cls, argv: Sequence[str], mode: str = "auto", env: dict | None = None) -> "Session":
        """Start `argv` under trace, stopped before its first instruction."""
        from ptrace.debugger.child import createChild

        if not argv:
            raise StepperError("no program given")
        pid = _create_child(list(argv), env, createChild)
        _, status = os.waitpid(pid, WALL)
        if not os.WIFSTOPPED(status):
            raise StepperError(f"{argv[0]}: ended before it could be traced")
        ptrace_lean.setoptions(pid, ptrace_lean.O_TRACECLONE | ptrace_lean.O_TRACEEXEC
                               | ptrace_lean.O_EXITKILL)
        return cls(pid, mode)

    @property
    def load_bias(self) -> int:
        """What to add to an address of the main executable as `nm` prints it."""
        return maps.main_bias(self.pid, self.exe)

    # --- breakpoints --------------------------------------------------------------------

    def add_breakpoint(self, address: int, mode: str | None = None,
                       callback: Callable[[Hit], None] | None = None) -> Breakpoint:
        """Insert an INT3 at run-time `address`; see Breakpoints.prepare for the refusals.

        The process must be stopped (before `run`, or from a callback).
        """
        bp = self.breakpoints.prepare(address, mode or self.mode, callback)
        self.breakpoints.insert(bp)
        return bp

    def remove_breakpoint(self, bp: Breakpoint) -> None:
        self.breakpoints.remove(bp)

    def read_memory(self, address: int, size: int) -> bytes:
        """Memory as the program sees it (breakpoint bytes hidden)."""
        return self.breakpoints.read_original(address, size)

    # --- the XOL area -------------------------------------------------------------------

    def xol_area(self, t: Thread) -> XolArea:
        """The XOL area, mapped on first need by stopped thread `t`. The injected mmap runs
        a `syscall` that already exists in the vDSO and writes nothing to the program, so it
        is safe while the other threads run."""
        area = self._area
        if area is None:
            area = self._area = XolArea(self.pid, self.exe, self.mem, xol.SLOT_SIZE)
        if not area.mapped:
            area.map(t.tid)
        return area

    # --- resuming -----------------------------------------------------------------------

    def resume(self, t: Thread, sig: int = 0) -> None:
        t.running = True
        ptrace_lean.cont(t.tid, sig)

    def single_step(self, t: Thread, ops, bp: Breakpoint, token) -> None:
        t.step = (ops, bp, token)
        t.running = True
        ptrace_lean.singlestep(t.tid)

    # --- the loop -----------------------------------------------------------------------

    def run(self) -> ExitStatus:
        """Resume the program and handle its stops until it has exited."""
        start = time.perf_counter()
        try:
            for t in list(self.threads.values()):
                if not t.running:
                    self.resume(t)
            self._loop()
        except BaseException:
            self.abandon()
            raise
        finally:
            self.wall_s += time.perf_counter() - start
        self._finish()
        assert self.exit is not None
        return self.exit

    def _loop(self) -> None:
        threads = self.threads
        bps = self.breakpoints.by_address
        getregs, cont = ptrace_lean.getregs, ptrace_lean.cont
        waitpid, wifstopped = os.waitpid, os.WIFSTOPPED
        stopped_trap = (SIGTRAP << 8) | 0x7F
        while threads:
            tid, status = waitpid(-1, WALL)
            t = threads.get(tid)
            if t is None:
                self._unknown(tid, status)
                continue
            t.running = False
            if status == stopped_trap and t.step is None:
                regs = t.regs
                getregs(tid, regs)
                address = regs[RIP] - 1
                bp = bps.get(address)
                if bp is not None:
                    regs[RIP] = address
                    bp.stats.hits += 1
                    if bp.callback is not None:
                        self._call(bp, t)
                    bp.ops.hit(self, t, bp)
                else:
                    t.running = True
                    cont(tid, SIGTRAP)  # the program's own trap
            elif wifstopped(status):
                self._stopped(t, status)
            else:
                self._gone(t, status)

    def _call(self, bp: Breakpoint, t: Thread) -> None:
        bp.callback(Hit(t.tid, bp.address, regs_dict(t.regs), self.read_memory))

    def _stopped(self, t: Thread, status: int) -> None:
        sig = os.WSTOPSIG(status)
        if status >> 8 == _EVENT_CLONE_STATUS:
            self._cloned(ptrace_lean.geteventmsg(t.tid))
            return self.resume(t)
        if status >> 8 == _EVENT_EXEC_STATUS:
            self._exec(t)
            return self.resume(t)
        if t.step is not None:
            ops, bp, token = t.step
            t.step = None
            if sig == SIGTRAP:
                if ops.complete(self, t, bp, token):
                    return self.resume(t)
                return self.single_step(t, ops, bp, token)
            ops.abort(self, t, bp, token)
            return self.resume(t, sig)
        if sig == SIGSTOP and t.fresh:
            t.fresh = False
            return self.resume(t)
        self.resume(t, sig)  # the program's signal, passed through unchanged

    def _cloned(self, tid: int) -> None:
        if tid not in self.threads:
            t = self.threads[tid] = Thread(tid, self.vm)
            t.fresh = True
            t.running = True  # until its initial stop: it cannot run before we resume it
            self.threads_seen += 1

    def _exec(self, t: Thread) -> None:
        """The program replaced its image: old breakpoints and the XOL area went with it."""
        for other in [tid for tid in self.threads if tid != self.pid]:
            del self.threads[other]
        if t.tid != self.pid:  # a non-leader thread exec'd: it now carries the leader's id
            self.threads.pop(t.tid, None)
        self.breakpoints.by_address.clear()
        self._area = None
        self.mem.close()
        self.mem = ptrace_lean.ProcMem(self.pid)
        self.breakpoints.mem = self.mem
        self.exe = os.readlink(f"/proc/{self.pid}/exe")

    def _unknown(self, tid: int, status: int) -> None:
        """A stop of a thread whose clone event has not been seen yet: its initial stop."""
        if os.WIFSTOPPED(status):
            t = self.threads[tid] = Thread(tid, self.vm)
            self.threads_seen += 1
            sig = os.WSTOPSIG(status)
            self.resume(t, 0 if sig == SIGSTOP else sig)

    def _gone(self, t: Thread, status: int) -> None:
        del self.threads[t.tid]
        if self._area is not None:
            self._area.release(t.tid)
        if t.tid == self.pid:
            self.exit = ExitStatus.from_wait(status)

    def _finish(self) -> None:
        self._closed = True
        self.mem.close()

    # --- leaving ------------------------------------------------------------------------

    def abandon(self) -> None:
        """Leave the program running untraced and unharmed: every INT3 byte restored, every
        thread out of any step and back in the original stream, the XOL area unmapped,
        every thread detached. Safe to call more than once, and after the program ended."""
        if self._closed:
            return
        self._closed = True
        try:
            self.breakpoints.restore_all()
            stopped = self._stop_all()
            if stopped and self._area is not None and self._area.mapped:
                try:
                    self._area.unmap(stopped[0].tid)
                except (StepperError, OSError):
                    pass
            for t in stopped:
                try:
                    ptrace_lean.detach(t.tid, 0)
                except StepperError:
                    pass
        finally:
            self.mem.close()

    def _stop_all(self) -> list[Thread]:
        """Bring every thread to a stop, including threads born meanwhile."""
        outcome: dict[int, bool] = {}
        while True:
            pending = [t for t in list(self.threads.values()) if t.tid not in outcome]
            if not pending:
                return [self.threads[tid] for tid, ok in outcome.items()
                        if ok and tid in self.threads]
            for t in pending:
                outcome[t.tid] = self._bring_to_stop(t)

    def _bring_to_stop(self, t: Thread) -> bool:
        """Stop thread `t` (if running), finish or abort its step; False if it is gone."""
        try:
            if not t.running:
                if t.step is not None:
                    self._settle(t)
                else:
                    self._rewind_interrupted_hit(t)
                return True
            tid, status = os.waitpid(t.tid, WALL | os.WNOHANG)
            if not tid:  # nothing pending
                if _in_trace_stop(t.tid):
                    # Its stop was reaped by a waitpid that the interruption cut short: the
                    # reason is lost, so take it as a stop before the step or hit completed.
                    if t.step is not None:
                        self._settle(t, SIGSTOP)
                    else:
                        self._rewind_if_ours(t)
                    return True
                if t.fresh:  # a new thread: its own initial SIGSTOP is on the way
                    t.fresh = False
                else:
                    ptrace_lean.tgkill(self.pid, t.tid, SIGSTOP)
                status = None
            return self._wait_for_sigstop(t, status)
        except (StepperError, ChildProcessError):
            return False

    def _wait_for_sigstop(self, t: Thread, status: int | None) -> bool:
        """Handle `t`'s stops (passing the program's signals on) until our SIGSTOP arrives."""
        while True:
            if status is None:
                _, status = os.waitpid(t.tid, WALL)
            if not os.WIFSTOPPED(status):
                self.threads.pop(t.tid, None)
                return False
            sig, event = os.WSTOPSIG(status), status >> 8
            status = None
            if event == _EVENT_CLONE_STATUS:  # a thread born while leaving: detach it too
                self._cloned(ptrace_lean.geteventmsg(t.tid))
                sig = 0
            elif t.step is not None:
                self._settle(t, sig)
                if sig == SIGTRAP:
                    sig = 0
            elif sig == SIGTRAP:
                self._rewind_if_ours(t)
                sig = 0
            if sig == SIGSTOP:
                return True
            ptrace_lean.cont(t.tid, sig)

    def _settle(self, t: Thread, sig: int = SIGTRAP) -> None:
        """Finish (step trap) or abort (any other stop) a step in progress."""
        if t.step is None:
            return
        ops, bp, token = t.step
        t.step = None
        if sig != SIGTRAP or not ops.complete(self, t, bp, token):
            ops.abort(self, t, bp, token)

    def _rewind_interrupted_hit(self, t: Thread) -> None:
        """The thread whose hit was being handled when the tracer raised: if its registers
        were not written back yet (the kernel's rip is one past the INT3 and the buffer holds
        the breakpoint address), put it back on the instruction, which then runs natively."""
        kernel = ptrace_lean.new_regs()
        ptrace_lean.getregs(t.tid, kernel)
        address = kernel[RIP] - 1
        if t.regs[RIP] == address and address in self.breakpoints.by_address:
            kernel[RIP] = address
            ptrace_lean.setregs(t.tid, kernel)

    def _rewind_if_ours(self, t: Thread) -> None:
        """A thread that hit one of our (now removed) INT3s: put it back on the instruction."""
        ptrace_lean.getregs(t.tid, t.regs)
        if t.regs[RIP] - 1 in self.breakpoints.by_address:
            t.regs[RIP] -= 1
            ptrace_lean.setregs(t.tid, t.regs)

    def kill(self) -> None:
        """End the program (used when setting up failed before it ran)."""
        try:
            os.kill(self.pid, signal.SIGKILL)
            while self.threads:
                tid, _ = os.waitpid(-1, WALL)
                self.threads.pop(tid, None)
        except (ProcessLookupError, ChildProcessError):
            pass
        self._closed = True
        self.mem.close()


def _in_trace_stop(tid: int) -> bool:
    """Whether thread `tid` sits in a ptrace stop (state `t` in /proc/TID/stat)."""
    try:
        with open(f"/proc/{tid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "t"
    except (OSError, IndexError):
        return False


def _create_child(argv: list[str], env: dict | None, create_child) -> int:
    """Fork and exec under PTRACE_TRACEME. Signals the tracer ignores (Python ignores SIGPIPE
    and SIGXFSZ) would stay ignored across exec, so they are reset around the fork: the
    program must start with the dispositions it would have had unprobed."""
    from ptrace.debugger.child import ChildError

    saved = {}
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        saved[sig] = signal.signal(sig, signal.SIG_DFL)
    try:
        return create_child(argv, False, env, close_fds=False)
    except (ChildError, OSError) as e:
        raise StepperError(f"cannot run {argv[0]}: {e}") from None
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
