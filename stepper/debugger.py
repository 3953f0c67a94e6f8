"""A debugger's control of a traced process: all-stop `cont()` returning a `Stop`, thread
handles with writable registers, single steps, memory writes.

`cont()` resumes every stopped thread and runs the tracer's loop (stepper.tracer) with two
hooks set on the root process: `on_hit` decides at each breakpoint hit whether the program
stops there (a breakpoint without callback, or whose callback returned STOP, or whose rules
say so: stepper.user_breakpoints), `on_stop` at each signal and fork/exec event (only those
asked for with `catch`). The thread that stops is held (not resumed) and the loop returns;
then every other thread of the tree is stopped too (stepper.allstop). Under `run()` the hooks
are not set and nothing changes.

A thread held at a breakpoint sits at the breakpoint address, its displaced instruction not
run yet: the next resume runs it through the breakpoint's own ops (emulation, XOL, boost...)
unless the user moved rip (then it is skipped). A thread held with a signal gets it at the
next resume, unless `cont(signal=...)` says otherwise (0 suppresses it).
"""

from __future__ import annotations

import errno
import signal as signals
import threading
from collections import deque
from typing import Any, Iterator

from . import (allstop, detach, kernel, located, maps, placement, returns, sigtrap, stepping, thread_step,
               tracer, user_breakpoints)
from .errors import StepperError
from .kernel import RIP
from .debug_stop import EVENTS, KINDS, StepStats, Stop
from .records import ExitStatus, Hit, Thread
from .regs_view import Registers

class ThreadHandle:
    """A stopped thread, for the user: `tid`, `regs` (writable, applied when it resumes),
    `step(n)`."""

    def __init__(self, state: "State", t: Thread) -> None:
        self._state = state
        self._thread = t
        self.tid = t.tid
        self._regs: Registers | None = None
        self._stepped: Stop | None = None  # Stop("step") of this thread, made once

    def __repr__(self) -> str:
        return f"<Thread {self.tid}>"

    @property
    def regs(self) -> Registers:
        """Registers by name (rax, eax, al, rip, rflags, xmm0..xmm15...); writes are applied
        with one SETREGS (and SETFPREGS for xmm) when the thread next runs."""
        if self._regs is None:
            self._state.check_stopped()
            self._regs = Registers(self.tid, self._thread.regs)
        return self._regs

    def flush(self) -> None:
        if self._regs is not None:
            self._regs.flush()

    def step(self, n: int = 1) -> Stop:
        """Run exactly one instruction of this thread (the others stay stopped), `n` times;
        returns the last Stop ("step", or why it ended early: "signal", "exit", "exec")."""
        if n == 1:  # the common case, kept short: a step by emulation is a few µs
            return thread_step.step(self._state, self)
        if n < 1:
            raise StepperError(f"step({n}): give a count of 1 or more")
        stop = None
        for _ in range(n):
            stop = self._state.step(self)
            if stop.kind != "step":
                break
        return stop

    def finish(self) -> Stop:
        """Run until this thread's current function returns: Stop("return") with
        `return_value` (rax), the thread at the return address. Every thread runs meanwhile;
        a breakpoint, signal or exit that comes first is returned instead (the return is
        still reported at a later cont()). StepperError if there is no frame to return to."""
        return self._state.finish(self)


class State:
    """The debugger's state of one traced tree (kept on the root process)."""

    def __init__(self, root: Any) -> None:
        self.root = root
        self.queue: deque[Stop] = deque()
        self.held: dict[int, tuple[str, int]] = {}  # tid -> ("bp", address) | ("signal", sig)
        self.siginfo: dict[int, Any] = {}  # a held signal's own siginfo, given back with it
        self.caught_signals: set[int] = set()
        self.caught_events: set[str] = set()
        self.interrupt_wanted = False
        self.handles: dict[int, ThreadHandle] = {}
        self.last: Stop | None = None
        self.stats = StepStats()
        self.finished: Stop | None = None  # the exit Stop, once the program ended
        self.returned: dict[int, Stop] = {}  # tid -> its finish()'s Stop, at the return hit
        #: the placement policy's follower, kept from one cont() to the next: pinning and
        #: unpinning the caller's thread at every cont() cost two sched_setaffinity calls and
        #: a /proc read per stop. The caller's thread stays pinned to the program's CPU
        #: between cont() calls; its affinity is given back at the exit, detach or kill.
        self.follower: placement.Follower | None = None
        #: tids whose registers in `t.regs` are newer than the kernel's (a step emulated):
        #: written with one SETREGS when the thread next runs, not at every step
        self.dirty: set[int] = set()

    # --- threads ------------------------------------------------------------------------

    def handle(self, t: Thread) -> ThreadHandle:
        h = self.handles.get(t.tid)
        if h is None or h._thread is not t:
            h = self.handles[t.tid] = ThreadHandle(self, t)
        return h

    def threads(self) -> list[ThreadHandle]:
        return [self.handle(t) for t in allstop.stopped_threads(self.root)]

    def check_stopped(self) -> None:
        if self.finished is not None:
            raise StepperError(f"process {self.root.pid} has exited")
        if self.root.loop_thread is not None:
            raise StepperError("the program is running: wait for cont() to return")

    # --- the loop's hooks ---------------------------------------------------------------

    def on_hit(self, p: Any, t: Thread, bp: Any) -> bool:
        """At a breakpoint hit under cont(): the engine's hook (return breakpoints: a
        finish() of this thread may end here), the rules and the callback, whose register
        writes are applied. True when the thread is held (the program stops) or was sent
        elsewhere by the callback; False: the loop steps the instruction as under run()."""
        if bp.observer is not None:
            bp.observer(t.tid, t.regs)
        hit = tracer.make_hit(p, bp, t)
        if bp.hook is not None:
            bp.hook(p, bp, t, hit)
        owner = bp.owner
        if owner is not None:
            stop = owner.stops(hit)
        elif bp.callback is not None:
            stop = bp.callback(hit) is user_breakpoints.STOP
        else:
            stop = not bp.internal  # the engine's own return breakpoints never stop
        returned = self.returned.pop(t.tid, None)
        moved = hit.regs.written and returns.write_back(t, hit.regs, bp.address)
        if not stop and returned is None:
            if moved:
                tracer.skipped(p, t, bp)
                return True
            return False
        if p.trap_handler:  # SIGTRAP caught or ignored: undo a kernel reset now
            sigtrap.after_trap(p, t, bp)
        kernel.setregs(t.tid, t.regs)  # at the breakpoint address, as the user sees it
        self.held[t.tid] = ("bp", bp.address)
        if returned is not None:
            self._halt(returned)
        if stop:
            self._halt(Stop("breakpoint", self.handle(t), owner if owner is not None else bp))
            if owner is not None and owner.temporary:
                owner.delete()
        return True

    def finish(self, h: "ThreadHandle") -> Stop:
        """Run until the current function of `h`'s thread returns (every thread runs): a
        return breakpoint at its return address, matched by thread and stack pointer
        (stepper.returns; the stack is never rewritten). Another stop may come first."""
        self.check_stopped()
        t = h._thread
        h.flush()

        def returned(ret: Any) -> None:
            self.returned[ret.tid] = Stop("return", self.handle(self.root.family[ret.tid]),
                                          return_value=ret.value)
        p = t.session
        rip = t.regs[RIP]
        symbol = located.containing_symbol(maps.read(p.pid), rip)
        entry = None  # in the body: the CFI unwinder finds the return address
        if symbol is not None and symbol.address == rip:  # at the entry: it is at [rsp]
            entry = Hit(t.tid, rip, {}, p.read_memory)
        returns.arm(p, t, entry, returned)
        return self.cont()

    def on_stop(self, p: Any, t: Thread, what: str, sig: int, detail: Any = None) -> bool:
        if what == "watchpoint":  # detail: the hits (stepper.watchpoints.fired)
            hit = next((h for h in detail if h.watchpoint.callback is None
                        or h.result is user_breakpoints.STOP), None)
            if hit is None or t.tid in self.held:
                return False
            self.held[t.tid] = ("signal", 0)
            self._halt(Stop("watchpoint", self.handle(t), watchpoint=hit.watchpoint,
                            watch=hit))
            return True
        if what == "exec":
            user_breakpoints.exec_happened(p)
        if what == "signal":
            if sig not in self.caught_signals or t.tid in self.held:
                return False
            self.held[t.tid] = ("signal", sig)
            self.siginfo[t.tid] = stepping.copy_info(kernel.getsiginfo(t.tid))
            self._halt(Stop("signal", self.handle(t), signal=sig))
            return True
        kind = "fork" if what == "vfork" else what
        if kind not in self.caught_events:
            return False
        self.held[t.tid] = ("signal", 0)
        self._halt(Stop(kind, self.handle(t)))
        return True

    def _halt(self, stop: Stop) -> None:
        self.queue.append(stop)
        self.root.halt = True

    def interrupt(self) -> None:
        """Make a running cont() return Stop("interrupt") (any thread, a signal handler)."""
        self.interrupt_wanted = True
        if self.root.loop_thread is not None:
            self.root.halt = True
            detach.kick(self.root)

    # --- cont ---------------------------------------------------------------------------

    def cont(self, signal: int | None = None) -> Stop:
        root = self.root
        if self.finished is not None:
            raise StepperError(f"process {root.pid} has exited ({_ended(self.finished.exit)})")
        if root.closed:
            raise StepperError(f"process {root.pid} is no longer traced")
        if self.queue:
            return self._give(self.queue.popleft())
        if self.interrupt_wanted:
            return self._give(self._interrupted())
        self._resume_all(signal)
        self._run_loop()
        if not root.threads:
            return self._give(self._exited())
        root.on_stop = self.on_stop  # a caught signal while the others stop: queued too
        try:
            allstop.stop_everything(root)
        finally:
            root.on_stop = None
            root.halt = False
        if self.queue:
            return self._give(self.queue.popleft())
        return self._give(self._interrupted())

    def drop_queued(self, which) -> None:
        """Forget the queued stops `which(stop)` is true of (their threads stay held and
        resume normally at the next cont())."""
        self.queue = deque(s for s in self.queue if not which(s))

    def _give(self, stop: Stop) -> Stop:
        self.last = stop
        return stop

    def _interrupted(self) -> Stop:
        self.interrupt_wanted = False
        main = self.root.threads.get(self.root.pid) or next(iter(self.root.threads.values()))
        return Stop("interrupt", self.handle(main))

    def release(self) -> None:
        """The caller's thread given its CPU affinity back (the program ended or is let go)."""
        follower, self.follower = self.follower, None
        if follower is not None:
            follower.end()

    def _exited(self) -> Stop:
        root = self.root
        self.release()
        for child in root.tree()[1:]:  # descendants still running: let go, as run() does
            if child.threads and not child.closed:
                child.abandon()
        root.close()
        self.finished = Stop("exit", exit=root.exit)
        return self.finished

    def _run_loop(self) -> None:
        root = self.root
        root.on_hit, root.on_stop = self.on_hit, self.on_stop
        root.loop_thread = threading.get_ident()
        follower = self.follower
        if follower is None or follower.owner != threading.get_native_id():
            self.release()  # another thread calls cont() now: the old one unpinned
            # pin only: the thread runs the user's code between cont() calls
            follower = self.follower = placement.Follower(root.pid, root.placement,
                                                          yields=False).start()
        root.follower = follower
        try:
            if not self.interrupt_wanted:
                tracer.loop(root)
        except BaseException:
            root.on_hit = root.on_stop = None  # leaving: nothing is held any more
            self.release()
            root.abandon()
            raise
        finally:
            root.loop_thread = None
            root.on_hit = root.on_stop = None
            root.halt = False

    def _resume_all(self, signal: int | None) -> None:
        current = self.last.thread.tid if self.last and self.last.thread else None
        for t in allstop.stopped_threads(self.root):
            sig = signal if (t.tid == current and signal is not None) else None
            try:
                self._resume(t, sig)
            except kernel.PtraceFailed as e:
                if e.errno != errno.ESRCH:
                    raise
                t.running = True  # killed meanwhile: the loop reaps its exit
        self.handles.clear()

    def _resume(self, t: Thread, sig: int | None) -> None:
        p = t.session
        if t.tid in self.dirty:
            self.dirty.discard(t.tid)
            kernel.setregs(t.tid, t.regs)
        h = self.handles.get(t.tid)
        if h is not None:
            h.flush()
        kind, value = self.held.pop(t.tid, ("", 0))
        if kind == "bp":
            bp = p.breakpoints.by_address.get(value)
            if bp is not None and t.regs[RIP] == value:
                if sig:  # a signal asked for: delivered there; the instruction runs when
                    # the handler returns to the breakpoint, a re-hit of this same hit
                    stepping.abandoned(t, bp)
                    kernel.setregs(t.tid, t.regs)
                    return stepping.resume(t, sig)
                tracer.go_on(p, t, bp.ops.hit(p, t, bp))  # the displaced instruction
                if p.trap_handler:
                    sigtrap.flush(p, t)
                return None
            kernel.setregs(t.tid, t.regs)  # moved, or the breakpoint is gone: runs natively
            return stepping.resume(t, sig or 0)
        info = self.siginfo.pop(t.tid, None)
        if kind == "signal":
            if info is not None and (sig is None or sig == value):
                kernel.setsiginfo(t.tid, info)  # the stop it is held at may be our SIGSTOP
            return stepping.resume(t, value if sig is None else sig)
        stepping.resume(t, sig or 0)

    def before_detach(self) -> None:
        """Leaving a stopped program: registers written by the user applied, and a signal a
        thread is held with made pending again (sent anew: the program still gets it)."""
        self.release()
        if self.root.loop_thread is not None or self.finished is not None:
            return
        for t in allstop.stopped_threads(self.root):
            h = self.handles.get(t.tid)
            kind, value = self.held.pop(t.tid, ("", 0))
            try:
                if t.tid in self.dirty:
                    self.dirty.discard(t.tid)
                    kernel.setregs(t.tid, t.regs)
                if h is not None:
                    h.flush()
                if kind == "signal" and value:
                    kernel.tgkill(t.session.pid, t.tid, value)
            except StepperError:
                pass
        self.handles.clear()

    # --- memory -------------------------------------------------------------------------

    def write(self, p: Any, address: int, data: bytes) -> None:
        """Write `data` as the program's memory; a breakpoint underneath keeps its INT3,
        and is set up again for the instruction the write leaves there."""
        self.check_stopped()
        data = bytes(data)
        end = address + len(data)
        mappings = maps.read(p.pid)
        at = address
        while at < end:
            m = maps.find(mappings, at)
            if m is None:
                raise StepperError(f"cannot write {len(data)} byte(s) at {address:#x}: "
                                   f"{at:#x} is not mapped in process {p.pid}")
            at = m.end
        under = [bp for bp in list(p.breakpoints.by_address.values())
                 if bp.address < end and address < bp.address + len(bp.insn.bytes)]
        for bp in under:
            p.remove_breakpoint(bp)
        try:
            p.mem.write(address, data)
        except OSError as e:
            raise StepperError(f"cannot write {len(data)} byte(s) at {address:#x} in process "
                               f"{p.pid}: {e.strerror}") from None
        finally:
            for bp in under:
                _reinsert(p, bp)

    # --- steps (stepper.thread_step) ----------------------------------------------------

    def step(self, h: ThreadHandle) -> Stop:
        return thread_step.step(self, h)

    def trace(self, h: ThreadHandle, until: int | None) -> Iterator[int]:
        return thread_step.trace(self, h, until)


def _reinsert(p: Any, bp: Any) -> None:
    """Put `bp` back after a write under it, decoded anew; its counts and owner kept."""
    new = p.add_breakpoint(bp.address, bp.mode, bp.callback)
    new.stats, new.owner, new.observer = bp.stats, bp.owner, bp.observer
    if bp.owner is not None:
        owned = bp.owner.breakpoints
        owned[owned.index(bp)] = new


def _ended(status: ExitStatus | None) -> str:
    if status is None:
        return "ended"
    if status.signal is not None:
        return f"killed by signal {status.signal}"
    return f"exit code {status.exit_code}"


def of(root: Any) -> State:
    """The debugger state of `root`'s tree, made on first use."""
    if root.debugger is None:
        root.debugger = State(root)
    return root.debugger


def catch(root: Any, what: int | str) -> None:
    """Make a signal (a number) or an event ("fork", "exec") stop cont()."""
    state = of(root)
    if isinstance(what, str):
        if what not in EVENTS:
            raise StepperError(f"cannot catch {what!r}: give a signal number, 'fork' or 'exec'")
        state.caught_events.add(what)
        return
    if not isinstance(what, int) or not 0 < what < 65 or what in (signals.SIGKILL, signals.SIGSTOP):
        raise StepperError(f"cannot catch signal {what!r}: give a signal number 1..64 "
                           f"other than SIGKILL and SIGSTOP")
    state.caught_signals.add(int(what))


def break_at(p: Any, where: int | str, callback=None, mode: str | None = None,
             on_return=None, *, condition=None, thread: int | None = None,
             temporary: bool = False, ignore: int = 0) -> user_breakpoints.UserBreakpoint:
    """A user breakpoint (stepper.user_breakpoints), placed now where it resolves."""
    if not isinstance(where, (int, str)) or isinstance(where, bool):
        raise StepperError(f"break_at({where!r}): give an address or a probe spec string")
    user = user_breakpoints.UserBreakpoint(p, where, callback, mode, condition, thread,
                                           temporary, ignore, on_return)
    user.place(strict=True)
    p.user_breakpoints.append(user)
    return user


__all__ = ["Stop", "StepStats", "ThreadHandle", "State", "of", "catch", "break_at", "KINDS"]
