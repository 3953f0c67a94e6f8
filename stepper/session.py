"""The event loop: one traced process, every thread followed, each thread's stops handled on
their own (no stop-the-world: breakpoints stay in memory while other threads run).

Lifecycle: `Session.spawn(argv)` forks and execs the program under ptrace (python-ptrace's
createChild) and stops it at the exec trap, before any of its instructions ran; breakpoints
are added then; `run()` resumes it and handles stops until every thread is gone. If the tracer
is interrupted or raises, `abandon()` restores every INT3 byte, brings any thread that is in a
step back to the original instruction stream, unmaps the XOL area and detaches every thread,
so the program carries on untraced, unharmed.

The hit path (SIGTRAP -> GETREGS -> ops.hit -> SETREGS -> CONT) uses ptrace_lean only.

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
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from . import boost, environment, located, placement, procfs, ptrace_lean, quiet, sigtrap, xol
from .breakpoints import Breakpoint, Breakpoints
from .errors import StepperError
from .live import LiveState
from .ptrace_lean import RIP, WALL, PtraceFailed
from .strategies import regs_dict
from .xol_area import XolArea

SIGTRAP = signal.SIGTRAP
SIGSTOP = signal.SIGSTOP
_EVENT_CLONE_STATUS = (ptrace_lean.EVENT_CLONE << 8) | SIGTRAP
_EVENT_EXEC_STATUS = (ptrace_lean.EVENT_EXEC << 8) | SIGTRAP
EVENT_FORK, EVENT_VFORK, EVENT_VFORK_DONE = 1, 2, 5
_EVENT_FORK_STATUS = (EVENT_FORK << 8) | SIGTRAP
_EVENT_VFORK_STATUS = (EVENT_VFORK << 8) | SIGTRAP
_EVENT_VFORK_DONE_STATUS = (EVENT_VFORK_DONE << 8) | SIGTRAP
O_TRACEFORK, O_TRACEVFORK = 0x02, 0x04
_FOLLOW = (ptrace_lean.O_TRACECLONE | ptrace_lean.O_TRACEEXEC | O_TRACEFORK | O_TRACEVFORK)
PTRACE_ATTACH = 16
EFLAGS = ptrace_lean.REG_INDEX["rflags"]
RSP = ptrace_lean.REG_INDEX["rsp"]
TF = 0x100
SI_KERNEL, TRAP_TRACE = 0x80, 2
CHILDREN = ("follow", "detach")
_FAULTS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, SIGTRAP)


class Thread:
    """A traced thread: its register buffer (reused on every hit), the emu State over it,
    and the step in progress, if any (ops, breakpoint, token)."""

    __slots__ = ("tid", "regs", "live", "step", "running", "fresh", "session", "tf", "rehit",
                 "stop_sent", "abandons", "held", "quiet_mask")

    def __init__(self, tid: int, vm: ptrace_lean.VmAccess, session: "Session") -> None:
        self.tid = tid
        self.regs = ptrace_lean.new_regs()
        self.live = LiveState(tid, self.regs, vm)
        self.step = None
        self.running = False
        self.fresh = False  # created, its initial SIGSTOP not seen yet
        self.session = session
        self.tf = 0  # the program's own trap flag when the current hit began
        self.rehit: list[tuple[int, int]] | None = None  # (address, rsp): abandoned steps
        self.stop_sent = False  # a SIGSTOP of ours is on its way to this thread
        self.abandons = 0  # steps abandoned for a signal since the last completed one
        self.held: list = []  # signals (siginfo) held until the current step completes
        self.quiet_mask: int | None = None  # the program's signal mask during a quiet step


@dataclass(frozen=True)
class ExitStatus:
    """How the program ended: `exit_code` (normal exit) or `signal` (killed), the other None."""

    exit_code: int | None
    signal: int | None
    detached: bool = False  # run() let the program go on untraced (both fields are None)

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
    """One traced process and its breakpoints. The first (root) session runs the event loop
    for every process of the tree: followed children are sessions of their own, reached
    through the shared `family` map (tid -> Thread, whose `.session` owns it)."""

    def __init__(self, pid: int, mode: str = "auto", children: str = "follow",
                 parent: "Session | None" = None, vfork: bool = False) -> None:
        if children not in CHILDREN:
            raise StepperError(f"unknown children policy {children!r}: choose follow or detach")
        self.pid = pid
        self.mode = mode
        self.children_mode = children
        self.parent = parent
        self.root: Session = parent.root if parent is not None else self
        self.family: dict[int, Thread] = parent.family if parent is not None else {}
        self.vfork = vfork
        self.exe = parent.exe if parent is not None else procfs.exe_of(pid)
        self.mem = ptrace_lean.ProcMem(pid)
        self.vm = ptrace_lean.VmAccess(pid)
        self.breakpoints = Breakpoints(pid, self.mem)
        self.threads: dict[int, Thread] = {}
        self.children: list[Session] = []
        self.retired: list[Breakpoint] = []  # dropped at an exec, with their stats
        self.threads_seen = 0
        self.exit: ExitStatus | None = None
        self.wall_s = 0.0
        self.attached = False
        self._area: XolArea | None = None
        self.boost = None  # stepper.boost.Boost: the boost slots, once a probe has one
        self._closed = False
        self._detach_requested = False
        self._interrupted = False  # Ctrl-C: KeyboardInterrupt is raised once detached
        self._loop_thread: int | None = None
        self._early: dict[int, int] = {}  # root only: first stops seen before their event
        #: root only: on_fork(parent, child) when a child is followed (before it runs),
        #: on_exec(session) at an exec stop (new image mapped, none of it run, no breakpoints)
        self.on_fork: Callable[["Session", "Session"], None] | None = None
        self.on_exec: Callable[["Session"], None] | None = None
        self.placement = parent.placement if parent is not None else placement.default_policy()
        # The program's SIGTRAP handler as last seen (stepper.sigtrap): SIG_DFL (0) costs a hit
        # nothing; anything else is checked after each trap of ours and put back if reset.
        self.trap_handler = parent.trap_handler if parent is not None else sigtrap.initial(pid)
        self.trap_gadget: int | None = None
        self.trap_rest: tuple[int, ...] | None = None  # flags, restorer, mask last restored
        self.trap_status_fd: int | None = None
        self.trap_warned = False
        self.trap_requeue: set[int] = set()  # threads whose own SIGTRAP merged with ours
        self._add_thread(pid)

    # --- starting -----------------------------------------------------------------------

    @classmethod
    def spawn(cls, argv: Sequence[str], mode: str = "auto", env: dict | None = None,
              children: str = "follow") -> "Session":
        """Start `argv` under trace, stopped before its first instruction."""
        from ptrace.debugger.child import createChild

        if not argv:
            raise StepperError("no program given")
        if children not in CHILDREN:
            raise StepperError(f"unknown children policy {children!r}: choose follow or detach")
        if env is None:
            env = environment.inherited()   # not the locale Python coerced for itself
        pid = _create_child(list(argv), env, createChild)
        _, status = os.waitpid(pid, WALL)
        if not os.WIFSTOPPED(status):
            raise StepperError(f"{argv[0]}: ended before it could be traced")
        ptrace_lean.setoptions(pid, _FOLLOW | ptrace_lean.O_EXITKILL)
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
                    ptrace_lean.detach(tid, 0)
                except StepperError:
                    pass
            raise
        session.attached = True
        sigtrap.learn_at_attach(session)
        for tid in sorted(done - {pid}):
            if os.path.exists(f"/proc/{pid}/task/{tid}"):
                session._add_thread(tid)
        return session

    @property
    def load_bias(self) -> int:
        """What to add to an address of the main executable as `nm` prints it."""
        return located.main_bias(self.pid, self.exe)

    def tree(self) -> list["Session"]:
        """This session and every descendant session, parents first."""
        out = [self]
        for child in self.children:
            out += child.tree()
        return out

    def _add_thread(self, tid: int, fresh: bool = False) -> Thread:
        t = Thread(tid, self.vm, self)
        t.fresh = fresh
        t.running = fresh  # a new thread cannot run before its initial stop is resumed
        self.threads[tid] = t
        self.family[tid] = t
        self.threads_seen += 1
        return t

    def _drop_thread(self, tid: int) -> None:
        self.threads.pop(tid, None)
        if self.family.get(tid) is not None and self.family[tid].session is self:
            del self.family[tid]

    # --- breakpoints --------------------------------------------------------------------

    def add_breakpoint(self, address: int, mode: str | None = None,
                       callback: Callable[[Hit], None] | None = None) -> Breakpoint:
        """Insert an INT3 at run-time `address`; see Breakpoints.prepare for the refusals.

        The process must be stopped (before `run`, or from a callback).
        """
        bp = self.breakpoints.prepare(address, mode or self.mode, callback)
        boost.install(self, bp)  # a boosted probe's slot is written once, before its INT3
        self.breakpoints.insert(bp)
        return bp

    def remove_breakpoint(self, bp: Breakpoint) -> None:
        self.breakpoints.remove(bp)

    def read_memory(self, address: int, size: int) -> bytes:
        """Memory as the program sees it (breakpoint bytes hidden)."""
        return self.breakpoints.read_original(address, size)

    # --- the XOL area -------------------------------------------------------------------

    def _area_object(self) -> XolArea:
        area = self._area
        if area is None:
            area = self._area = XolArea(self.pid, self.exe, self.mem, xol.SLOT_SIZE)
        return area

    def xol_area(self, t: Thread) -> XolArea:
        """The XOL area, mapped on first need by stopped thread `t`. The injected mmap runs
        a `syscall` that already exists in the vDSO and writes nothing to the program, so it
        is safe while the other threads run."""
        area = self._area_object()
        if not area.mapped:
            area.map(t.tid)
        return area

    # --- resuming -----------------------------------------------------------------------

    def resume(self, t: Thread, sig: int = 0) -> None:
        """Let `t` run on (a thread in the middle of a step is stepped on, not continued)."""
        t.running = True
        if t.step is not None:
            ptrace_lean.singlestep(t.tid, sig)
        else:
            ptrace_lean.cont(t.tid, sig)

    def single_step(self, t: Thread, ops, bp: Breakpoint, token) -> None:
        t.step = (ops, bp, token)
        t.running = True
        ptrace_lean.singlestep(t.tid)

    def resume_stepped(self, t: Thread) -> None:
        """Resume `t` after its probed instruction completed. A program running with TF set
        expects the CPU's single-step trap after that instruction: deliver it (TRAP_TRACE,
        si_addr = the next instruction, as the kernel reports a #DB single-step)."""
        t.abandons = 0
        if not t.tf and not t.held:
            return self.resume(t)
        deliver = t.held
        t.held = []
        if t.tf:
            t.tf = 0
            info = ptrace_lean.getsiginfo(t.tid)
            info.signo, info.errno, info.code = SIGTRAP, 0, TRAP_TRACE
            info.addr = t.regs[RIP]
            deliver.insert(0, info)
        _requeue(t, deliver[1:])
        ptrace_lean.setsiginfo(t.tid, deliver[0])
        if deliver[0].signo == SIGTRAP:
            return sigtrap.deliver(self, t)  # the program's trap: its handler is noted
        self.resume(t, deliver[0].signo)

    # --- the loop -----------------------------------------------------------------------

    def run(self) -> ExitStatus:
        """Resume the program and handle its stops until it has exited, or until
        `request_detach()` (then the program runs on untraced: ExitStatus(detached=True))."""
        if self.root is not self:
            raise StepperError("run() belongs to the first traced process")
        if self._closed:
            raise StepperError(f"process {self.pid} is no longer traced")
        start = time.perf_counter()
        self._loop_thread = threading.get_ident()
        restore = self._handle_sigterm()
        restore_int = self._handle_sigint()
        self._follower = placement.Follower(self.pid, self.placement).start()
        try:
            for t in list(self.family.values()):
                if not t.running:
                    self.resume(t)
            self._loop()
            if self._detach_requested:
                self.abandon()
                if self._interrupted:
                    raise KeyboardInterrupt  # Ctrl-C propagates once the program is let go
                if self.exit is not None:
                    return self.exit  # it ended while being let go
                return ExitStatus(None, None, True)
        except BaseException:
            self.abandon()
            raise
        finally:
            self._follower.end()
            restore_int()
            restore()
            self._loop_thread = None
            self.wall_s += time.perf_counter() - start
        for child in self.tree()[1:]:  # descendants still running when the program ended
            if child.threads and not child._closed:
                child.abandon()
        self._finish()
        assert self.exit is not None
        return self.exit

    def _loop(self) -> None:
        family = self.family
        mine = self.threads
        getregs = ptrace_lean.getregs
        waitpid, wifstopped = os.waitpid, os.WIFSTOPPED
        stopped_trap = (SIGTRAP << 8) | 0x7F
        seen = self._follower.seen
        while mine and not self._detach_requested:
            tid, status = waitpid(-1, WALL)
            seen(tid)
            t = family.get(tid)
            if t is None:
                self._unknown(tid, status)
                continue
            t.running = False
            s = t.session
            try:
                if status == stopped_trap and t.step is None:
                    regs = t.regs
                    getregs(tid, regs)
                    address = regs[RIP] - 1
                    bp = s.breakpoints.by_address.get(address)
                    if bp is not None and (not regs[EFLAGS] & TF or _is_int3(tid)):
                        regs[RIP] = address
                        t.tf = regs[EFLAGS] & TF
                        bp.stats.hits += 1
                        if t.rehit is not None and _returning(t, address):
                            pass  # the re-hit of a step abandoned for a signal: seen already
                        elif bp.callback is not None:
                            s._call(bp, t)
                        if s.trap_handler:  # SIGTRAP caught or ignored: undo a kernel reset
                            sigtrap.after_trap(s, t, bp)
                            bp.ops.hit(s, t, bp)
                            sigtrap.flush(s, t)
                        else:
                            bp.ops.hit(s, t, bp)
                    else:
                        s._stopped(t, status)  # the program's own trap, passed through
                elif wifstopped(status):
                    s._stopped(t, status)
                else:
                    s._gone(t, status)
            except PtraceFailed as e:
                if e.errno != errno.ESRCH:
                    raise
                t.running = True  # killed meanwhile: its exit is reported next

    def _call(self, bp: Breakpoint, t: Thread) -> None:
        bp.callback(Hit(t.tid, bp.address, regs_dict(t.regs), self.read_memory))

    def _stopped(self, t: Thread, status: int) -> None:
        if t.quiet_mask is not None:
            quiet.end(t)  # the program's own signal mask, before anything looks at it
        sig, high = os.WSTOPSIG(status), status >> 8
        if high == _EVENT_CLONE_STATUS:
            self._cloned(ptrace_lean.geteventmsg(t.tid))
            return self.resume(t)
        if high == _EVENT_FORK_STATUS or high == _EVENT_VFORK_STATUS:
            self._forked(t, ptrace_lean.geteventmsg(t.tid), high == _EVENT_VFORK_STATUS)
            return self.resume(t)
        if high == _EVENT_VFORK_DONE_STATUS:
            return self.resume(t)
        if high == _EVENT_EXEC_STATUS:
            self._exec(t)
            if self.parent is not None and self.children_mode == "detach":
                return self.abandon()  # a vfork child that exec'd: its own image, let go
            if self.root.on_exec is not None:
                self.root.on_exec(self)
            return self.resume(t)
        if sig == SIGSTOP and t.fresh:
            return self._first_stop(t)
        if sig == SIGSTOP and t.stop_sent:  # ours: a detach was requested
            t.stop_sent = False
            if t.step is not None:
                self._settle(t, SIGSTOP)
            return None
        if self.boost is not None and t.step is None:
            sig = self.boost.stopped(t, sig)  # a RIP inside a boost slot is mapped back first
            if sig is None:
                return None  # boost resumed it: a signal waits for the slot's instruction
        if t.step is not None:
            ops, bp, token = t.step
            t.step = None
            if sig == SIGTRAP and ptrace_lean.getsiginfo(t.tid).code > 0:
                if ops.complete(self, t, bp, token):
                    if self.trap_handler:  # the step's trap, forced like the INT3
                        sigtrap.after_trap(self, t, bp)
                        self.resume_stepped(t)
                        return sigtrap.flush(self, t)
                    return self.resume_stepped(t)
                return self.single_step(t, ops, bp, token)
            # A fault of the instruction itself: the hit happened (the instruction ran and
            # faulted, as unprobed). Any other signal came before the step ran: abandon it;
            # but a step abandoned already is finished first (a signal storm faster than a
            # step must not stop the program's progress) and the signal delivered right
            # after the instruction, which an asynchronous signal may equally hit.
            info = ptrace_lean.getsiginfo(t.tid)
            synchronous = sig in _FAULTS and info.code > 0
            if not synchronous and t.abandons:
                t.held.append(_copy_info(info))
                t.step = (ops, bp, token)
                if quiet.can_quiet(bp.insn):  # no further signal can cut the step short
                    return quiet.step(t)
                return self.resume(t)  # steps on, the signal suppressed for now
            ops.abort(self, t, bp, token)
            if not synchronous:
                self._abandoned(t, bp)
            return self.resume(t, sig)
        if sig == SIGTRAP:
            return sigtrap.deliver(self, t)  # its own SIGTRAP: its handler is noted on the way
        self.resume(t, sig)  # the program's signal, passed through unchanged

    def _abandoned(self, t: Thread, bp: Breakpoint) -> None:
        """The step at `bp` was abandoned (a signal arrived first): the thread is back at
        bp.address and will hit it again; that hit is the one counted."""
        bp.stats.hits -= 1
        bp.stats.abandoned += 1
        t.abandons += 1
        if t.rehit is None:
            t.rehit = []
        t.rehit.append((bp.address, t.regs[RSP]))

    def _first_stop(self, t: Thread) -> None:
        """The initial stop of a new thread or child process."""
        t.fresh = False
        if t.step is not None:  # forked in the middle of an out-of-line syscall: finish it
            ops, bp, token = t.step
            t.step = None
            ops.complete(self, t, bp, token)
        if (t.tid == self.pid and self.parent is not None and self.children_mode == "detach"
                and not self.vfork):
            return self.abandon()
        self.resume(t)

    def _cloned(self, tid: int) -> None:
        if tid not in self.family:
            self._add_thread(tid, fresh=True)
            self.root._replay(tid)

    def _forked(self, t: Thread, pid: int, vfork: bool) -> None:
        """A child process (fork, vfork, or clone without CLONE_THREAD): it is traced
        already (PTRACE_O_TRACEFORK/VFORK) and carries our INT3 bytes."""
        if pid in self.family:
            return
        child = Session(pid, self.mode, self.children_mode, parent=self, vfork=vfork)
        child.family[pid].fresh = True
        child.family[pid].running = True
        child.threads_seen = 1
        self.children.append(child)
        for bp in self.breakpoints:
            copy = Breakpoint(bp.address, bp.insn, bp.mode, bp.ops, bp.callback, bp.symbol,
                              inserted=bp.inserted)
            child.breakpoints.by_address[bp.address] = copy
        if self.boost is not None:
            child.boost = self.boost.inherited(child)
        if vfork:  # the same memory: the same area and slots
            child._area = self._area_object()
        elif self._area is not None and self._area.mapped:
            child._area = self._area.inherited(pid, child.mem)
        if t.step is not None:
            ops, bp, token = t.step
            child.threads[pid].step = (ops, child.breakpoints.by_address.get(bp.address, bp),
                                       token)
        if self.root.on_fork is not None:
            self.root.on_fork(self, child)
        self.root._replay(pid)

    def _replay(self, tid: int) -> None:
        """A stop reaped before its thread was known (root only): handle it now."""
        status = self._early.pop(tid, None)
        if status is not None:
            t = self.family[tid]
            t.running = False
            t.session._stopped(t, status)

    def _exec(self, t: Thread) -> None:
        """The program replaced its image: old breakpoints and the XOL area went with it."""
        for other in [tid for tid in self.threads if tid != self.pid]:
            self._drop_thread(other)
        if t.tid != self.pid:  # a non-leader thread exec'd: it now carries the leader's id
            self._drop_thread(t.tid)
            self.threads[self.pid] = t
            self.family[self.pid] = t
            t.tid = self.pid
            t.live.tid = self.pid
        if self._area is not None:
            self._area.release(t.tid)
        self.retired += self.breakpoints.by_address.values()
        self.breakpoints.by_address.clear()
        self._area = None
        self.boost = None
        self.mem.close()
        self.mem = ptrace_lean.ProcMem(self.pid)
        self.breakpoints.mem = self.mem
        self.exe = procfs.exe_of(self.pid)
        self.vfork = False
        self.trap_handler = sigtrap.initial(self.pid)  # exec resets handlers, keeps SIG_IGN
        self.trap_gadget = self.trap_rest = None

    def _unknown(self, tid: int, status: int) -> None:
        """A stop of a thread or child whose clone/fork event has not been seen yet: its
        initial stop. Kept until the event says whose it is."""
        if os.WIFSTOPPED(status):
            self._early[tid] = status

    def _gone(self, t: Thread, status: int) -> None:
        self._drop_thread(t.tid)
        if self._area is not None:
            self._area.release(t.tid)
        if t.tid == self.pid:
            self.exit = ExitStatus.from_wait(status)
            if self.parent is not None:
                self._closed = True
                self.mem.close()

    def _finish(self) -> None:
        self._closed = True
        self.mem.close()

    # --- leaving ------------------------------------------------------------------------

    def request_detach(self) -> None:
        """Leave the program running untraced. Callable from any thread, from a signal
        handler or from a callback while `run()` is running: `run()` then detaches at its
        next step and returns ExitStatus(detached=True). Outside `run()`, detaches now."""
        root = self.root
        if root._loop_thread is None:
            return root.abandon()
        root._detach_requested = True
        root._kick()

    def _kick(self) -> None:
        """Wake the loop's waitpid: a SIGSTOP to one running thread, consumed as ours."""
        for t in list(self.family.values()):
            if t.running and not t.fresh and not t.stop_sent:
                t.stop_sent = True
                try:
                    ptrace_lean.tgkill(t.session.pid, t.tid, SIGSTOP)
                    return
                except StepperError:
                    t.stop_sent = False

    def _handle_sigterm(self) -> Callable[[], None]:
        """SIGTERM to the tracer detaches (when the application has not claimed SIGTERM
        and run() is on the main thread, where Python runs signal handlers)."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = signal.getsignal(signal.SIGTERM)
        if previous not in (signal.SIG_DFL, None):
            return lambda: None
        signal.signal(signal.SIGTERM, lambda signum, frame: self.request_detach())
        return lambda: signal.signal(signal.SIGTERM, previous)

    def _handle_sigint(self) -> Callable[[], None]:
        """Ctrl-C detaches at the loop's next safe point, then KeyboardInterrupt propagates
        (when SIGINT has Python's default handler and run() is on the main thread). Raised
        where the signal lands, KeyboardInterrupt could cut a hit or a step between two ptrace
        calls: e.g. after XolOps.hit moved RIP into the XOL slot but before the step was
        recorded, or after a step record was taken but before `complete` moved RIP back; the
        detach would then unmap the area under that thread (SIGSEGV)."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = signal.getsignal(signal.SIGINT)
        if previous is not signal.default_int_handler:
            return lambda: None

        def interrupted(signum, frame) -> None:
            if not self._detach_requested:  # once: a second kick during the detach would
                self._interrupted = True    # leave a SIGSTOP pending in a detached thread
                self.request_detach()

        signal.signal(signal.SIGINT, interrupted)
        return lambda: signal.signal(signal.SIGINT, previous)

    def abandon(self) -> None:
        """Leave the program (and every followed descendant) running untraced and unharmed:
        every INT3 byte restored, every thread out of any step and back in the original
        stream, the XOL areas unmapped (only once no thread of the tree can be inside one),
        every thread detached. Safe to call more than once, and after the program ended."""
        stopped: dict[int, tuple[Session, list[Thread]]] = {}
        try:
            while True:
                todo = [s for s in self.tree() if not s._closed and id(s) not in stopped]
                if not todo:
                    break
                for s in todo:
                    s.breakpoints.restore_all()
                    stopped[id(s)] = (s, s._stop_all())
            for s, threads in stopped.values():
                for t in threads:
                    try:
                        quiet.end(t)  # a held step cut short: the program's own mask back
                    except StepperError:
                        pass
                if s.boost is not None:  # every thread out of the boost slots, then unmap
                    s.boost.leave(threads, unmap=not s.vfork)
                area = s._area
                if threads and area is not None and area.mapped and not s.vfork:
                    try:
                        area.unmap(threads[0].tid)
                    except (StepperError, OSError):
                        pass
            for s, threads in stopped.values():
                # The leader last: let go first, it may exit_group at once, and threads still
                # stopped under us would die as zombies only we can reap (the program's exit
                # would then never reach its parent).
                for t in sorted(threads, key=lambda t: t.tid == s.pid):
                    try:
                        ptrace_lean.detach(t.tid, 0)
                    except StepperError:
                        pass
                    s._drop_thread(t.tid)
        finally:
            for s, _ in stopped.values():
                s._closed = True
                s.mem.close()

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
            early = self.root._early.pop(t.tid, None)
            if early is not None:
                return self._wait_for_sigstop(t, early)
            if not t.running:
                if t.step is not None:
                    self._settle(t)
                else:
                    self._rewind_interrupted_hit(t)
                return True
            tid, status = os.waitpid(t.tid, WALL | os.WNOHANG)
            if not tid:  # nothing pending
                if procfs.in_trace_stop(t.tid):
                    # Its stop was reaped by a waitpid that the interruption cut short: the
                    # reason is lost, so take it as a stop before the step or hit completed.
                    if t.step is not None:
                        self._settle(t, SIGSTOP)
                    else:
                        self._rewind_if_ours(t)
                    return True
                if not (t.fresh or t.stop_sent):  # else a SIGSTOP is on the way already
                    t.stop_sent = True
                    ptrace_lean.tgkill(self.pid, t.tid, SIGSTOP)
                status = None
            return self._wait_for_sigstop(t, status)
        except (StepperError, ChildProcessError):
            self._drop_thread(t.tid)
            return False

    def _wait_for_sigstop(self, t: Thread, status: int | None) -> bool:
        """Handle `t`'s stops (passing the program's signals on) until our SIGSTOP arrives."""
        while True:
            if status is None:
                status = self._next_status(t)
            if not os.WIFSTOPPED(status):
                self._drop_thread(t.tid)
                if t.tid == self.pid:
                    self.exit = ExitStatus.from_wait(status)
                return False
            sig, event = os.WSTOPSIG(status), status >> 8
            status = None
            if event == _EVENT_CLONE_STATUS:  # a thread born while leaving: detach it too
                self._cloned(ptrace_lean.geteventmsg(t.tid))
                sig = 0
            elif event == _EVENT_FORK_STATUS or event == _EVENT_VFORK_STATUS:
                self._forked(t, ptrace_lean.geteventmsg(t.tid), event == _EVENT_VFORK_STATUS)
                sig = 0
            elif event == _EVENT_EXEC_STATUS or event == _EVENT_VFORK_DONE_STATUS:
                if event == _EVENT_EXEC_STATUS:
                    self._exec(t)
                sig = 0
            elif sig == SIGSTOP and (t.fresh or t.stop_sent):
                t.fresh = t.stop_sent = False
                if t.step is not None:
                    self._settle(t, SIGSTOP)
                return True
            elif t.step is not None:
                self._settle(t, sig)
                if sig == SIGTRAP:
                    sig = 0
            elif sig == SIGTRAP:
                self._rewind_if_ours(t)
                sig = 0
            if sig and t.step is None and self.boost is not None:
                self.boost.map_back(t.tid, sig)
            if not (t.fresh or t.stop_sent):  # a stop reaped before ours was sent: send it now
                t.stop_sent = True
                ptrace_lean.tgkill(self.pid, t.tid, SIGSTOP)
            if t.step is not None:
                ptrace_lean.singlestep(t.tid, sig)
            else:
                ptrace_lean.cont(t.tid, sig)

    def _next_status(self, t: Thread) -> int:
        """Wait for `t`'s next stop or exit. A process leader that exited (exit_group, or on
        its own) is reported only once every other thread is reaped, and those exits come to
        us, so waiting for the leader alone could wait forever: for a leader, every thread's
        event is taken here; exits are handled at once, any other event is kept for its
        thread's turn (root._early, as a first stop seen before its clone event)."""
        if t.tid != self.pid:
            return os.waitpid(t.tid, WALL)[1]
        while True:
            tid, status = os.waitpid(-1, WALL)
            if tid == t.tid:
                return status
            other = self.family.get(tid)
            if other is not None and not os.WIFSTOPPED(status):
                other.session._gone(other, status)
            else:
                self.root._early[tid] = status

    def _settle(self, t: Thread, sig: int = SIGTRAP) -> None:
        """Finish (step trap) or abort (any other stop) a step in progress."""
        if t.step is None:
            return
        quiet.end(t)
        ops, bp, token = t.step
        t.step = None
        if sig != SIGTRAP or not ops.complete(self, t, bp, token):
            ops.abort(self, t, bp, token)
            if sig != SIGTRAP:
                bp.stats.hits -= 1
                bp.stats.abandoned += 1
        elif self.trap_handler:  # the step's trap is forced, as the INT3 was
            sigtrap.after_trap(self, t, bp)
            sigtrap.flush(self, t)
        held, t.held = t.held, []
        _requeue(t, held)  # signals held for the step: kept pending for the program

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
        """End the program and its followed children (used when setting up failed)."""
        for s in self.tree():
            try:
                os.kill(s.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            while any(s.threads for s in self.tree()):
                tid, _ = os.waitpid(-1, WALL)
                t = self.family.get(tid)
                if t is not None:
                    t.session._drop_thread(tid)
        except ChildProcessError:
            pass
        for s in self.tree():
            s._closed = True
            s.mem.close()


def _returning(t: Thread, address: int) -> bool:
    """Whether this hit is `t` coming back to a step it abandoned for a signal (same
    address, same stack pointer: the handler has returned). Marks are a stack: a handler can
    itself be interrupted mid-step. A hit inside a handler runs below the signal frame, so
    marks above the stack pointer are kept; a mark at or below it that does not match is a
    handler that never returned there (longjmp): dropped."""
    now = t.regs[RSP]
    marks = t.rehit
    found = False
    while marks and marks[-1][1] <= now:
        where, rsp = marks.pop()
        if where == address and rsp == now:
            found = True
            break
    if not marks:
        t.rehit = None
    return found


def _copy_info(info: ptrace_lean.Siginfo) -> ptrace_lean.Siginfo:
    copy = ptrace_lean.Siginfo()
    ctypes.memmove(ctypes.addressof(copy), ctypes.addressof(info), ctypes.sizeof(copy))
    return copy


def _requeue(t: Thread, infos: list) -> None:
    """Queue signals to thread `t` again (tgkill: the signal number is kept, its siginfo
    becomes SI_TKILL). Used only for a second signal held during one step, or on detach."""
    for info in infos:
        try:
            ptrace_lean.tgkill(t.session.pid, t.tid, info.signo)
        except StepperError:
            pass


def _is_int3(tid: int) -> bool:
    """A SIGTRAP with TF set may be the program's own single-step trap: only an INT3 has
    si_code SI_KERNEL."""
    return ptrace_lean.getsiginfo(tid).code == SI_KERNEL


def _attach_thread(pid: int, tid: int) -> bool:
    """PTRACE_ATTACH one thread and wait for its attach SIGSTOP (signals that come first are
    delivered to it, so none is lost); False if the thread is gone."""
    import ctypes

    if ptrace_lean._ptrace(PTRACE_ATTACH, tid, 0, 0) == -1:
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
        ptrace_lean.cont(tid, sig)
    ptrace_lean.setoptions(tid, _FOLLOW)
    return True


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
