"""The traced process: the per-process state of the engine, and the narrow view of it that step
ops use (stepper.strategies.base.Traced: memory, threads, the XOL area, the boost slots).

One object per process of the traced tree. The first one (the root) also holds what the
tracer's loop needs for the whole tree: the `family` map (tid -> Thread, shared by every
process of the tree, each Thread pointing at its own process), the first stops seen before
their thread was known (`early`), the hooks `on_fork`/`on_exec`, and the detach request.
What changes a process's state when the kernel reports an event (a thread or child born, an
exec, a thread gone) is here; deciding what the event means is the tracer's (stepper.tracer).
"""

from __future__ import annotations

from typing import Callable

from . import kernel, located, placement, procfs, returns, sigtrap, stepping, watchpoints, xol
from .breakpoints import Breakpoints
from .errors import StepperError
from .records import Breakpoint, ExitStatus, Hit, Step, Thread
from .strategies.boost import Boost
from .xol_area import XolArea

CHILDREN = ("follow", "detach")


class TracedProcess:
    """One traced process and its breakpoints; followed children are processes of their
    own (`children`), reached through the shared `family` map."""

    def __init__(self, pid: int, mode: str = "auto", children: str = "follow",
                 parent: "TracedProcess | None" = None, vfork: bool = False) -> None:
        if children not in CHILDREN:
            raise StepperError(f"unknown children policy {children!r}: choose follow or detach")
        self.pid = pid
        self.mode = mode
        self.children_mode = children
        self.parent = parent
        self.root: TracedProcess = parent.root if parent is not None else self
        self.family: dict[int, Thread] = parent.family if parent is not None else {}
        self.vfork = vfork
        self.exe = parent.exe if parent is not None else procfs.exe_of(pid)
        self.mem = kernel.ProcMem(pid)
        self.vm = kernel.VmAccess(pid)
        self.breakpoints = Breakpoints(pid, self.mem)
        self.threads: dict[int, Thread] = {}
        self.children: list[TracedProcess] = []
        self.retired: list[Breakpoint] = []  # dropped at an exec, with their stats
        self.threads_seen = 0
        self.exit: ExitStatus | None = None
        self.wall_s = 0.0
        self.attached = False
        self.area: XolArea | None = None  # the XOL area (per-thread slots), made on need
        self.boost = Boost(self)  # the boost slots' registry (areas mapped on first need)
        self.closed = False
        self.returns: returns.Returns | None = None  # return breakpoints, made on first need
        # Root only: the loop's state.
        self.detach_requested = False
        self.interrupted = False  # Ctrl-C: KeyboardInterrupt is raised once detached
        self.loop_thread: int | None = None
        self.early: dict[int, int] = {}  # first stops seen before their event
        #: root only: on_fork(parent, child) when a child is followed (before it runs),
        #: on_exec(process) at an exec stop (new image mapped, none of it run, no breakpoints)
        self.on_fork: Callable[["TracedProcess", "TracedProcess"], None] | None = None
        self.on_exec: Callable[["TracedProcess"], None] | None = None
        #: root only, set by a debugger (stepper.debugger) while cont() runs the loop:
        #: on_hit(p, t, bp) -> True holds `t` at the breakpoint (it stops the program);
        #: on_stop(p, t, what, sig) -> True holds `t` at a signal ("signal") or an event
        #: ("fork", "exec"); `halt` makes the loop return once the current stop is handled.
        self.on_hit: Callable | None = None
        self.on_stop: Callable | None = None
        self.halt = False
        self.debugger = None  # root only: stepper.debugger's state, made by its first use
        # The program's SIGTRAP handler as last seen (stepper.sigtrap): SIG_DFL (0) costs a hit
        # nothing; anything else is checked after each trap of ours and put back if reset.
        self.placement = parent.placement if parent is not None else placement.default_policy()
        self.trap_handler = parent.trap_handler if parent is not None else sigtrap.initial(pid)
        self.trap_gadget: int | None = None
        self.trap_rest: tuple[int, ...] | None = None  # flags, restorer, mask last restored
        self.trap_status_fd: int | None = None
        self.trap_warned = False
        self.warnings: list[str] = []  # what the engine warned the user of in this process
        self.trap_requeue: set[int] = set()  # threads whose own SIGTRAP merged with ours
        #: hardware watchpoints set in every thread (stepper.watchpoints); not inherited by
        #: forked children. `watch_exec`: one is an "x" watchpoint (the loop must then tell
        #: its trap from an INT3 just before it).
        self.watchpoints: list[watchpoints.Watchpoint] = []
        self.watch_exec = False
        #: a debugger's breakpoints in this process (stepper.user_breakpoints), and its
        #: breakpoint on the loader's _dl_debug_state that inserts their pending sites
        self.user_breakpoints: list = []
        self.loader_watch: Breakpoint | None = None
        self.add_thread(pid)

    @property
    def load_bias(self) -> int:
        """What to add to an address of the main executable as `nm` prints it."""
        return located.main_bias(self.pid, self.exe)

    def tree(self) -> list["TracedProcess"]:
        """This process and every followed descendant, parents first."""
        out = [self]
        for child in self.children:
            out += child.tree()
        return out

    def add_thread(self, tid: int, fresh: bool = False) -> Thread:
        t = Thread(tid, self.vm, self)
        t.fresh = fresh
        t.running = fresh  # a new thread cannot run before its initial stop is resumed
        self.threads[tid] = t
        self.family[tid] = t
        self.threads_seen += 1
        return t

    def drop_thread(self, tid: int) -> None:
        self.threads.pop(tid, None)
        if self.family.get(tid) is not None and self.family[tid].session is self:
            del self.family[tid]

    def close(self) -> None:
        """No longer traced: its /proc/PID/mem closed."""
        self.closed = True
        self.mem.close()

    # --- breakpoints --------------------------------------------------------------------

    def add_breakpoint(self, address: int, mode: str | None = None,
                       callback: Callable[[Hit], None] | None = None,
                       on_return: Callable | None = None) -> Breakpoint:
        """Insert an INT3 at run-time `address`; see Breakpoints.prepare for the refusals.
        `on_return`: see stepper.returns.

        The process must be stopped (before `run`, or from a callback).
        """
        returns.before_add(self, address)  # a return INT3 of the engine's steps aside
        bp = self.breakpoints.prepare(address, mode or self.mode, callback)
        self.boost.prepare(bp)  # a boosted probe's slot is written once, before its INT3
        self.breakpoints.insert(bp)
        returns.added(self, bp, on_return)
        return bp

    def add_breakpoints(self, addresses: list[int], mode: str | None = None,
                        callback: Callable[[Hit], None] | None = None
                        ) -> list[Breakpoint | StepperError]:
        """`add_breakpoint` for many addresses at once (see Breakpoints.add_many): one
        answer per address, a Breakpoint or the StepperError that refused it."""
        return self.breakpoints.add_many([(a, mode or self.mode, callback) for a in addresses],
                                         self.boost.prepare)

    def remove_breakpoint(self, bp: Breakpoint) -> None:
        self.breakpoints.remove(bp)
        returns.removed(self, bp)

    def read_memory(self, address: int, size: int) -> bytes:
        """Memory as the program sees it (breakpoint bytes hidden)."""
        return self.breakpoints.read_original(address, size)

    # --- what step ops use --------------------------------------------------------------

    def area_object(self) -> XolArea:
        """The XOL area of this process, mapped or not."""
        area = self.area
        if area is None:
            area = self.area = XolArea(self.pid, self.exe, self.mem, xol.SLOT_SIZE)
        return area

    def xol_area(self, t: Thread) -> XolArea:
        """The XOL area, mapped on first need by stopped thread `t`. The injected mmap runs
        a `syscall` that already exists in the vDSO and writes nothing to the program, so it
        is safe while the other threads run."""
        area = self.area_object()
        if not area.mapped:
            area.map(t.tid)
        return area

    def resume(self, t: Thread, sig: int = 0) -> None:
        """Let `t` run on (stepper.sigtrap resumes a thread it delivered SIGTRAP to)."""
        stepping.resume(t, sig)

    # --- events the kernel reports ------------------------------------------------------

    def cloned(self, tid: int) -> bool:
        """A new thread (traced already, PTRACE_O_TRACECLONE); False if it was known."""
        if tid in self.family:
            return False
        self.add_thread(tid, fresh=True)
        return True

    def forked(self, t: Thread, pid: int, vfork: bool) -> "TracedProcess | None":
        """A child process (fork, vfork, or clone without CLONE_THREAD): it is traced
        already (PTRACE_O_TRACEFORK/VFORK) and carries our INT3 bytes. Returns the new
        child (None if it was known), before it ran."""
        if pid in self.family:
            return None
        child = type(self)(pid, self.mode, self.children_mode, parent=self, vfork=vfork)
        child.family[pid].fresh = True
        child.family[pid].running = True
        child.threads_seen = 1
        self.children.append(child)
        for bp in self.breakpoints:
            copy = Breakpoint(bp.address, bp.insn, bp.mode, bp.ops, bp.callback, bp.symbol,
                              inserted=bp.inserted, on_return=bp.on_return, hook=bp.hook,
                              internal=bp.internal, observer=bp.observer,
                              # a forked child holds its own copy's count; vfork shares memory
                              semaphore=None if vfork else bp.semaphore)
            child.breakpoints.by_address[bp.address] = copy
        child.boost = self.boost.inherited(child)
        if vfork:  # the same memory: the same area and slots
            child.area = self.area_object()
        elif self.area is not None and self.area.mapped:
            child.area = self.area.inherited(pid, child.mem)
        if t.stepping is not None:
            step = t.stepping
            child.threads[pid].stepping = Step(
                step.ops, child.breakpoints.by_address.get(step.bp.address, step.bp), step.token)
        returns.forked(self, child, t, vfork)
        return child

    def exec(self, t: Thread) -> None:
        """The program replaced its image: old breakpoints and the XOL area went with it."""
        for other in [tid for tid in self.threads if tid != self.pid]:
            self.drop_thread(other)
        if t.tid != self.pid:  # a non-leader thread exec'd: it now carries the leader's id
            self.drop_thread(t.tid)
            self.threads[self.pid] = t
            self.family[self.pid] = t
            t.tid = self.pid
            t.live.tid = self.pid
        if self.area is not None:
            self.area.release(t.tid)
        self.retired += self.breakpoints.by_address.values()
        self.breakpoints.by_address.clear()
        self.returns = None  # pending returns went with the old image
        self.area = None
        self.boost = Boost(self)
        t.boost_held = None  # held for slots that went with the old image
        self.mem.close()
        self.mem = kernel.ProcMem(self.pid)
        self.breakpoints.mem = self.mem
        self.exe = procfs.exe_of(self.pid)
        self.vfork = False
        self.trap_handler = sigtrap.initial(self.pid)  # exec resets handlers, keeps SIG_IGN
        watchpoints.forget(self)  # exec cleared the debug registers
        self.trap_gadget = self.trap_rest = None

    def gone(self, t: Thread, status: int) -> None:
        """Thread `t` exited or was killed (`status` from waitpid)."""
        self.drop_thread(t.tid)
        if self.returns is not None:
            self.returns.thread_gone(t.tid)
        if self.area is not None:
            self.area.release(t.tid)
        if t.tid == self.pid:
            self.exit = ExitStatus.from_wait(status)
            if self.parent is not None:
                self.close()
