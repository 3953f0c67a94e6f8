"""The public library API: spawn a program, add breakpoints with callbacks, run, read stats.

    from stepper import api

    proc = api.spawn(["./prog", "arg"])            # stopped before its first instruction
    hits = []
    proc.break_at(proc.load_bias + 0x1139, callback=lambda hit: hits.append(hit.regs["rdi"]))
    status = proc.run()                             # until the program exits
    print(status.exit_code, proc.stats())

Everything here is a thin, stable face over stepper.session; callers should not need more.

Attaching mirrors spawning:

    proc = api.attach(pid)                          # every thread stopped, nothing changed yet
    proc.break_at(address, callback=...)
    status = proc.run()                             # until it exits, or until detach()
    status.detached                                 # True: it runs on untraced

See docs/under_fire.md for signals in the middle of a step, fork/vfork/exec and detaching.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

from . import debugger, placement, returns, watchpoints
from .debugger import StepStats, Stop, ThreadHandle
from .errors import StepperError
from .records import Breakpoint, ExitStatus, Hit, Stats
from .returns import Return
from .session import Session
from .policy import MODES
from .user_breakpoints import STOP, UserBreakpoint
from .watchpoints import Watchpoint, WatchHit

if TYPE_CHECKING:  # pragma: no cover
    from .fetchargs import FetchArg

__all__ = ["spawn", "attach", "Process", "Breakpoint", "Stats", "ExitStatus", "Hit", "Return",
           "MODES", "Watchpoint", "WatchHit", "Stop", "STOP", "ThreadHandle", "UserBreakpoint",
           "StepStats", "parse_fetch"]


class Process:
    """A program started under stepper, stopped until `run()`."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Process) and other._session is self._session

    def __hash__(self) -> int:
        return id(self._session)

    @property
    def pid(self) -> int:
        return self._session.pid

    @property
    def exe(self) -> str:
        """Path of the main executable, as the kernel resolved it."""
        return self._session.exe

    @property
    def load_bias(self) -> int:
        """Add this to an address printed by `nm` for the main executable (0 unless PIE)."""
        return self._session.load_bias

    @property
    def breakpoints(self) -> list[Breakpoint]:
        return [bp for bp in self._session.breakpoints if not bp.internal]

    @property
    def retired_breakpoints(self) -> list[Breakpoint]:
        """Breakpoints dropped when the process exec'd (their stats stay readable)."""
        return list(self._session.retired)

    @property
    def threads_seen(self) -> int:
        """How many threads the program had over its life (the main one included)."""
        return self._session.threads_seen

    @property
    def wall_s(self) -> float:
        return self._session.wall_s

    @property
    def placement(self) -> str:
        """Where stepper's tracer runs (stepper.placement): `follow` (the default, or
        $STEPPER_PLACEMENT) keeps it on the CPU of the thread it serves, and on a quiet
        machine runs it as SCHED_IDLE so that the thread stays there; `pin` only pins;
        `none` leaves stepper's affinity alone. The program's own affinity and scheduling
        policy are never changed."""
        return self._session.placement

    @placement.setter
    def placement(self, policy: str) -> None:
        self._session.placement = placement.check(policy, "placement")

    def break_at(self, where: int | str, callback: Callable[[Hit], object] | None = None,
                 mode: str | None = None, on_return: Callable[[Return], None] | None = None,
                 *, condition: Callable[[Hit], bool] | None = None,
                 thread: int | None = None, temporary: bool = False,
                 ignore: int = 0) -> "Breakpoint | UserBreakpoint":
        """Put a breakpoint at run-time address `where`, or at every site of a `stepper probe
        -p` spec string ("libc.so.6:malloc", "prog:main+0x10", "file.c:42", globs...): a spec
        naming a library not loaded yet is pending and inserted when the library loads.

        `callback(hit)` runs at every hit, before the instruction is stepped (what it writes
        in `hit.regs` is applied first; a new `rip` skips the instruction;
        `hit.skip_call(value)` returns at once from a function entry); under `cont()`
        returning `api.STOP` stops the program there, and a breakpoint without callback stops
        it (under `run()` it only counts). `mode` overrides the process's strategy for this
        one. `condition(hit)` -> bool, `thread=tid`, `temporary` (removed at its first stop)
        and `ignore=N` (the first N hits that pass the others are let go) decide which hits
        are acted on; every hit counts. A plain address without those gives the engine's
        Breakpoint (as always); a spec or any rule gives a UserBreakpoint (`.locations`,
        `.hits`, `.pending`). `on_return(ret)`: at a function's entry, called when each call
        returns (ret.value = rax, ret.duration_ns, ret.entry = the Hit, ret.tid), matched by
        thread and stack pointer, the stack never rewritten (stepper.returns). Raises
        StepperError (one line, nothing written) for a site that cannot be probed or a spec
        that resolves to nothing."""
        if isinstance(where, int) and not isinstance(where, bool) and condition is None \
                and thread is None and not temporary and not ignore:
            return self._session.add_breakpoint(where, mode, callback, on_return)
        return debugger.break_at(self._session, where, callback, mode, on_return,
                                 condition=condition, thread=thread, temporary=temporary,
                                 ignore=ignore)

    def break_at_many(self, addresses: Sequence[int],
                      callback: Callable[[Hit], None] | None = None,
                      mode: str | None = None) -> list[Breakpoint | StepperError]:
        """`break_at` for each address, much faster for thousands (one read of the process's
        maps, one memory write per run of adjacent addresses). One answer per address, as
        `break_at` one by one would give: the Breakpoint, or the StepperError refusing it
        (returned, not raised: the others are in)."""
        return self._session.add_breakpoints(list(addresses), mode, callback)

    def on_return(self, bp: Breakpoint, callback: Callable[[Return], None]) -> None:
        """Give breakpoint `bp` (at a function's entry) an `on_return` as break_at's."""
        returns.added(self._session, bp, callback)

    def remove(self, bp: "Breakpoint | UserBreakpoint") -> None:
        if isinstance(bp, UserBreakpoint):
            bp.delete()
        else:
            self._session.remove_breakpoint(bp)

    def hold_semaphore(self, bp: Breakpoint, address: int) -> None:
        """Enable a USDT probe (stepper.usdt): add one to the 16-bit semaphore at run-time
        `address` while `bp` is in, taken back when `bp` is removed or the process detached
        (a forked child's copy holds the child's count). The one write a program can see."""
        self._session.breakpoints.hold_semaphore(bp, address)

    def watch(self, address: int, size: int = 8, access: str = "w",
              callback: Callable[[WatchHit], object] | None = None) -> Watchpoint:
        """A hardware watchpoint on [address, address + size) in every thread, present and
        future: `access` "w" (a write), "rw" (a read or a write) or "x" (executing
        `address`; size 1). `callback(hit)` runs at each hit (a WatchHit: tid, rip, old and
        new bytes); `wp.hits` counts them. Every thread must be stopped (before `run()`, or
        in a callback of a single-threaded program). Raises StepperError (one line, nothing
        set) for a size other than 1, 2, 4, 8, a misaligned or unmapped address, or a fifth
        watchpoint. Not copied to forked children; dropped at exec."""
        return watchpoints.watch(self._session, address, size, access, callback)

    def unwatch(self, wp: Watchpoint) -> None:
        """Remove watchpoint `wp` from every thread (every thread must be stopped). Its
        stops still queued by cont() (hits of several threads at once) are dropped too."""
        watchpoints.unwatch(self._session, wp)
        state = self._session.root.debugger
        if state is not None:
            state.drop_queued(lambda stop: stop.watchpoint is wp)

    @property
    def watchpoints(self) -> list[Watchpoint]:
        return list(self._session.watchpoints)

    def read(self, address: int, size: int) -> bytes:
        """The program's memory, breakpoint bytes hidden."""
        return self._session.read_memory(address, size)

    # --- the debugger: all-stop control (stepper.debugger) --------------------------------

    def write(self, address: int, data: bytes) -> None:
        """Write the program's memory (through /proc/PID/mem, read-only text included) while
        it is stopped. A breakpoint underneath stays: its saved original bytes become the new
        ones and its instruction is decoded again. An unmapped address: StepperError."""
        debugger.of(self._session.root).write(self._session, address, data)

    def cont(self, signal: int | None = None) -> Stop:
        """Resume every thread and run until something stops the program: a breakpoint
        without callback (or whose callback returned `api.STOP`), a caught signal or event
        (`catch`), `interrupt()`, or the exit. Returns that Stop with every thread of the
        program stopped (all-stop); stops that happened together come from the next calls.
        The thread that stopped with a signal gets it when resumed, unless `signal` says
        otherwise (0: suppressed, N: another). Registers written through `stop.thread.regs`
        are applied as each thread resumes."""
        return debugger.of(self._session.root).cont(signal)

    def interrupt(self) -> None:
        """Make a running `cont()` return Stop("interrupt") with every thread stopped. Safe
        from any thread or a signal handler; before cont(), the next cont() returns at once."""
        debugger.of(self._session.root).interrupt()

    def catch(self, what: int | str) -> None:
        """Make signal `what` (e.g. signal.SIGUSR1) stop `cont()` (Stop kind "signal"; by
        default signals pass through as unprobed), or "fork" / "exec" (kinds "fork", "exec":
        the forking or exec'ing thread, the new image mapped, none of it run)."""
        debugger.catch(self._session.root, what)

    @property
    def threads(self) -> list[ThreadHandle]:
        """Handles of every stopped thread (after a Stop); `.regs`, `.step()`."""
        return debugger.of(self._session.root).threads()

    def trace_instructions(self, thread: ThreadHandle, until: int | None = None):
        """Step `thread` one instruction at a time (the others stay stopped) and yield the
        address of each instruction executed, until its rip is `until` (not executed) or it
        stops for another reason (a caught signal, the exit)."""
        return debugger.of(self._session.root).trace(thread, until)

    @property
    def step_stats(self) -> StepStats:
        """Instruction steps so far: emulated (no trap) and trapped (a real single-step)."""
        return debugger.of(self._session.root).stats

    @property
    def warnings(self) -> list[str]:
        """What the engine warned of while tracing this process (each also printed once)."""
        return list(self._session.warnings)

    @property
    def attached(self) -> bool:
        """True for a process taken with `attach` (it was running before stepper)."""
        return self._session.attached

    @property
    def children(self) -> list["Process"]:
        """The child processes followed so far (fork, vfork), each with its own breakpoints
        (copies of this one's at the fork) and its own hit counts; `exit` is how it ended."""
        return [Process(child) for child in self._session.children]

    @property
    def parent(self) -> "Process | None":
        """The followed process this one was forked from (None for the first one)."""
        parent = self._session.parent
        return None if parent is None else Process(parent)

    def on_fork(self, callback: Callable[["Process", "Process"], None] | None) -> None:
        """`callback(parent, child)` whenever a process of the tree forks a followed child,
        before the child runs: the child holds copies of the parent's breakpoints (own hit
        counts, same callbacks; change `bp.callback` on the child's copies as needed).
        Call it on the first process; it covers every descendant."""
        self._session.root.on_fork = None if callback is None else (
            lambda parent, child: callback(Process(parent), Process(child)))

    def on_exec(self, callback: Callable[["Process"], None] | None) -> None:
        """`callback(process)` whenever a process of the tree execs, at the exec stop: the
        new image and its dynamic loader are mapped, none of their code ran, and the old
        image's breakpoints are gone (see `retired_breakpoints`); `break_at` puts new ones.
        Call it on the first process; it covers every descendant."""
        self._session.root.on_exec = None if callback is None else (
            lambda session: callback(Process(session)))

    @property
    def exit(self) -> ExitStatus | None:
        """How the process ended, once it has (None while it runs, or if it was let go)."""
        return self._session.exit

    def run(self) -> ExitStatus:
        """Run until the program exits, or until `detach()` is requested: then the program
        runs on untraced and the result is ExitStatus(None, None, detached=True), unless it
        ended meanwhile (then how it ended, detached=False). SIGTERM to
        the tracer while run() runs on the main thread (and the application has not set its
        own SIGTERM handler) also detaches. On KeyboardInterrupt or any exception the
        program is left running untraced with every breakpoint removed, and the exception
        propagates. Followed children still running when the program exits are let go."""
        return self._session.run()

    def detach(self) -> None:
        """Remove every breakpoint and let the program (and followed children) go on untraced:
        every INT3 restored, no thread left in the XOL area, the area unmapped, every thread
        resumed, pending signals kept. Safe from any thread, from a signal handler and from a
        callback while `run()` runs (run() then detaches and returns); before or after
        `run()` it detaches at once; after `cont()`, registers written through a Stop's
        threads are applied first and a caught signal a thread was stopped with is kept."""
        if self._session.root.debugger is not None:
            self._session.root.debugger.before_detach()
        self._session.request_detach()

    def kill(self) -> None:
        if self._session.root.debugger is not None:
            self._session.root.debugger.release()
        self._session.kill()

    def stats(self) -> dict[int, Stats]:
        """Per breakpoint address: hits, steps by strategy, fall-backs and why."""
        return {bp.address: bp.stats for bp in self._session.breakpoints if not bp.internal}


def spawn(argv: Sequence[str], mode: str = "auto", env: dict | None = None,
          children: str = "follow") -> Process:
    """Start `argv` (PATH is searched) under trace, stopped before its first instruction.

    `mode` is the default strategy of its breakpoints: auto, emulate, xol or reinsert.
    `env`: the program's environment; None passes this process's `os.environ` as it is
    (changes made to it included) less the LC_CTYPE that Python's own locale coercion
    (PEP 538) adds when it starts without a locale: the program gets the environment it
    would have had unprobed (see stepper.environment).
    `children`: "follow" (default) traces forked children with the breakpoints active in
    them; "detach" removes the breakpoints from a child and lets it go untraced."""
    _check_mode(mode)
    placement.default_policy()  # a bad $STEPPER_PLACEMENT fails before anything starts
    return Process(Session.spawn(argv, mode, env, children))


def attach(pid: int, mode: str = "auto", children: str = "follow") -> Process:
    """Trace running process `pid` (every thread, including threads it creates while
    stepper attaches); it stays stopped until `run()`. Mirrors `spawn`. A pid that is dead,
    a thread rather than a process, stepper itself, or not ours to trace: StepperError."""
    _check_mode(mode)
    placement.default_policy()
    return Process(Session.attach(pid, mode, children))


def parse_fetch(text: str, is_return: bool = False) -> "FetchArg":
    """`[NAME=]FETCHARG[:TYPE]` as `stepper probe -p` takes it (docs/trace.md), parsed once;
    then `hit.fetch(parsed)` in a callback. A bad one: FetchError (one line, with the
    character). `is_return` allows `$retval`. A parameter name (`a`, DWARF) and, at a USDT
    probe's site, `$argN` are read at the hit's own site."""
    from .fetch_sites import SiteFetchArg
    from .fetchargs import parse_fetch as parse

    return SiteFetchArg.of(parse(text, is_return=is_return))   # names: bound at each hit


def _check_mode(mode: str) -> None:
    from .errors import StepperError

    if mode not in MODES:
        raise StepperError(f"unknown strategy {mode!r}: choose one of {', '.join(MODES)}")
