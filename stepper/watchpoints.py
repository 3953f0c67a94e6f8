"""Hardware watchpoints of a traced process: `watch`, `unwatch`, and what a fired one means.

Why the debug registers: a watched address costs the program nothing until it is accessed,
because the CPU compares every access itself (stepper.debugregs has the register layout).
The registers are per thread, so a process's watchpoints live here, per process
(`p.watchpoints`, one slot each), and are written into every thread: at `watch`, and into
each new thread at its first stop (the kernel starts a clone with them clear).

What the kernel and the CPU do, and what follows:
- A data watchpoint ("w", "rw") is trap-like: the thread stops with SIGTRAP after the access;
  the new value is in memory, rip is the next instruction. An execute watchpoint ("x", one
  byte) is fault-like: the thread stops before the instruction, rip at it; the kernel sets
  RF so that resuming runs it without trapping again.
- A fired slot shows as a bit in DR6, which the kernel sets at the debug exception and never
  clears: `fired` reads it and writes 0, so a later SIGTRAP (the program's own) is not taken
  for a watchpoint. One trap may also be a single step (DR6.BS): ours (an out-of-line step
  of a breakpoint, reported by the step's stop) or the program's own (then it is delivered
  as well).
- Forked children start with clear debug registers (copy_thread) and the watchpoints are
  not copied to them: as in gdb, a watchpoint belongs to the process it was set in. exec
  clears the registers (flush_thread) and the old image's addresses mean nothing: the
  process's watchpoints are dropped there (`forget`).
- Watchpoints survive PTRACE_DETACH: a detach clears them (`clear_threads`), or the
  program's next watched access would kill it with SIGTRAP.
- The emulator writes memory with process_vm_writev, which the debug registers do not see:
  an emulated access that overlaps a watched range is refused (`GuardedState` raises
  `WatchedAccess` before anything is written) and the instruction runs on the CPU instead.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Any, Callable

from emu import MemoryFault

from . import debugregs, kernel
from .debugregs import DR6_SINGLE_STEP, SLOTS
from .errors import StepperError
from .kernel import RIP

_DEBUG_TRAPS = (kernel.TRAP_HWBKPT, kernel.TRAP_TRACE)


class WatchpointError(StepperError):
    """A watchpoint cannot be set or removed (one line: what to change)."""


@dataclass(eq=False)
class Watchpoint:
    """One hardware watchpoint: [address, address + size) watched for `access` in every
    thread of its process, with debug register `slot`. `value` is the watched bytes as last
    seen (at `watch`, then after each hit); `hits` counts the traps it caused."""

    address: int
    size: int
    access: str
    callback: Callable[["WatchHit"], Any] | None = None
    slot: int = 0
    hits: int = 0
    value: bytes = b""
    active: bool = True  # False once removed (unwatch, exec)

    def overlaps(self, address: int, size: int) -> bool:
        return address < self.address + self.size and self.address < address + size

    def describe(self) -> str:
        return f"{self.access} watchpoint on {self.size} byte(s) at {self.address:#x}"


@dataclass(eq=False)
class WatchHit:
    """A fired watchpoint: thread `tid` stopped with `rip` after the access (a data
    watchpoint: the instruction after the one that accessed; "x": the watched instruction,
    not run yet). `old`/`new`: the watched bytes before (as last seen) and now. `result`: what
    the callback returned. `single_step`: the same trap was also a single step."""

    watchpoint: Watchpoint
    tid: int
    rip: int
    old: bytes
    new: bytes
    single_step: bool = False
    result: Any = None

    @property
    def old_value(self) -> int:
        return int.from_bytes(self.old, "little")

    @property
    def new_value(self) -> int:
        return int.from_bytes(self.new, "little")


# --- setting and removing --------------------------------------------------------------

def watch(p: Any, address: int, size: int = 8, access: str = "w",
          callback: Callable[[WatchHit], Any] | None = None) -> Watchpoint:
    """Watch [address, address + size) in every thread of process `p`; everything is checked
    before any register is written, and a kernel refusal undoes what was set."""
    try:
        size = debugregs.checked_size(size, access)
    except debugregs.DebugRegisterError as e:
        raise WatchpointError(str(e)) from None
    if not isinstance(address, int) or address <= 0:
        raise WatchpointError(f"{address!r} is not an address")
    if address % size:
        raise WatchpointError(f"a {size}-byte watchpoint needs an address aligned to {size}, "
                              f"not {address:#x}")
    used = {wp.slot for wp in p.watchpoints}
    if len(used) >= SLOTS:
        raise WatchpointError("more than four watchpoints: x86-64 has four debug registers; "
                              "remove one with unwatch() first")
    threads = _stopped_threads(p, "watch")
    value = _read(p, address, size)
    if value is None:
        raise WatchpointError(f"address {address:#x} is not mapped in process {p.pid}")
    wp = Watchpoint(address, size, access, callback, min(set(range(SLOTS)) - used), 0, value)
    before = _control(p.watchpoints)
    after = _control([*p.watchpoints, wp])
    done = []
    try:
        for t in threads:
            if _set(t.tid, wp.slot, address, after):
                done.append(t)
    except StepperError:
        for t in done:
            _set(t.tid, wp.slot, 0, before)
        raise
    p.watchpoints.append(wp)
    p.watch_exec = any(w.access == "x" for w in p.watchpoints)
    return wp


def unwatch(p: Any, wp: Watchpoint) -> None:
    """Remove `wp` from every thread of `p` (nothing if it is not set there)."""
    if wp not in p.watchpoints:
        return
    threads = _stopped_threads(p, "unwatch")
    rest = [w for w in p.watchpoints if w is not wp]
    control = _control(rest)
    for t in threads:
        _set(t.tid, wp.slot, 0, control, disable_first=True)
    p.watchpoints[:] = rest
    p.watch_exec = any(w.access == "x" for w in rest)
    wp.active = False


def apply(p: Any, t: Any) -> None:
    """Set `p`'s watchpoints in its new thread `t` (at its first stop). DR7 is written
    whole, so a value the kernel carried over from the parent thread cannot linger."""
    control = _control(p.watchpoints)
    for wp in p.watchpoints:
        if not _set(t.tid, wp.slot, wp.address, None):
            return
    _set_control(t.tid, control)


def clear_threads(p: Any, threads: list) -> None:
    """Disable every slot in `threads` (stopped, about to be detached): debug registers
    survive a detach. Failures are ignored: the thread is gone or going."""
    if not p.watchpoints:
        return
    for t in threads:
        try:
            debugregs.write(t.tid, 7, 0)
            for wp in p.watchpoints:
                debugregs.write(t.tid, wp.slot, 0)
        except StepperError:
            pass


def forget(p: Any) -> None:
    """The process exec'd: the kernel cleared the registers and the addresses are gone."""
    for wp in p.watchpoints:
        wp.active = False
    p.watchpoints = []
    p.watch_exec = False


def _control(watchpoints: list[Watchpoint]) -> int:
    control = 0
    for wp in watchpoints:
        control |= debugregs.control_bits(wp.slot, wp.size, wp.access)[0]
    return control


def _set(tid: int, slot: int, address: int, control: int | None,
         disable_first: bool = False) -> bool:
    """Address register `slot`, then DR7 (`control`, unless None); False if `tid` is gone.
    The address is written before DR7 enables the slot, and after DR7 disables it."""
    try:
        if disable_first and control is not None:
            debugregs.write(tid, 7, control)
            debugregs.write(tid, slot, address)
            return True
        debugregs.write(tid, slot, address)
        if control is not None:
            debugregs.write(tid, 7, control)
    except debugregs.DebugRegisterError as e:
        if e.errno == errno.ESRCH:
            return False
        raise
    return True


def _set_control(tid: int, control: int) -> None:
    try:
        debugregs.write(tid, 7, control)
    except debugregs.DebugRegisterError as e:
        if e.errno != errno.ESRCH:
            raise


def _stopped_threads(p: Any, what: str) -> list:
    """The threads of `p` whose registers can be written now. A thread not seen running yet
    (its first stop to come) is set there; a running one cannot be written."""
    threads = []
    for t in list(p.threads.values()):
        if t.fresh:
            continue
        if t.running:
            raise WatchpointError(f"{what}() needs every thread of process {p.pid} stopped "
                                  f"(thread {t.tid} runs): call it before run() or at a "
                                  f"stop of cont()")
        threads.append(t)
    return threads


def _read(p: Any, address: int, size: int) -> bytes | None:
    try:
        data = p.read_memory(address, size)
    except (OSError, StepperError):
        return None
    return data if len(data) == size else None


# --- a trap ----------------------------------------------------------------------------

def fired(p: Any, t: Any) -> list[WatchHit]:
    """The watchpoints of `p` that made stopped thread `t` trap, as hits (empty: none did;
    the trap is someone else's). Called for a SIGTRAP of a thread with no step in progress
    (stepper.tracer.stopped) and after a completed out-of-line step (stepper.stepping).
    DR6 is cleared, each hit counted, the watched bytes refreshed, and the callback of each
    fired watchpoint called with its hit. Only a SIGTRAP the CPU raised (si_code
    TRAP_HWBKPT, or TRAP_TRACE with a step) is looked at: one sent by a program or by an
    INT3 can never be a watchpoint's, whatever DR6 holds."""
    info = kernel.siginfo_if_any(t.tid)
    if info is None or info.code not in _DEBUG_TRAPS:
        return []
    status = debugregs.read(t.tid, 6)
    if not status & 0xF:
        return []
    debugregs.write(t.tid, 6, 0)
    mine = [wp for wp in p.watchpoints if status >> wp.slot & 1]
    if not mine:
        return []
    kernel.getregs(t.tid, t.regs)
    rip = t.regs[RIP]
    if p.boost.areas:  # run in a boost slot: the address in the program's own code
        plan = p.boost.locate(rip)
        if plan is not None:
            rip = plan.original_address(rip)
    hits = []
    for wp in mine:
        new = _read(p, wp.address, wp.size) or b""
        hit = WatchHit(wp, t.tid, rip, wp.value, new, bool(status & DR6_SINGLE_STEP))
        wp.value = new
        wp.hits += 1
        hits.append(hit)
    for hit in hits:
        if hit.watchpoint.callback is not None:
            hit.result = hit.watchpoint.callback(hit)
    return hits


def refired(p: Any, t: Any, address: int) -> bool:
    """Whether the trap that ended `t`'s step of the instruction at `address` (stepped in
    place: reinsert) is an execute watchpoint on that very instruction, which traps before
    it runs, again. It was reported when the INT3 there was reached: DR6 is cleared, nothing
    counted, and the caller steps again (the kernel set RF: the instruction runs then)."""
    status = debugregs.read(t.tid, 6)
    if status & DR6_SINGLE_STEP or not any(
            wp.access == "x" and wp.address == address and status >> wp.slot & 1
            for wp in p.watchpoints):
        return False
    kernel.getregs(t.tid, t.regs)
    if t.regs[RIP] != address:
        return False
    debugregs.write(t.tid, 6, 0)
    return True


# --- emulation ---------------------------------------------------------------------------

class WatchedAccess(MemoryFault):
    """An emulated access that a watchpoint covers: the instruction must run on the CPU,
    where the debug registers see it (nothing was written)."""


class GuardedState:
    """emu State over another (a thread's LiveState) that refuses, before anything is
    written, an access overlapping a watched range: a write for "w" and "rw", a read for
    "rw" ("x" concerns instruction fetches, which the emulator does not make)."""

    __slots__ = ("regs", "inner", "watches")

    def __init__(self, inner: Any, watches: list[Watchpoint]) -> None:
        self.regs = inner.regs
        self.inner = inner
        self.watches = watches

    def read(self, address: int, size: int) -> bytes:
        for wp in self.watches:
            if wp.access == "rw" and wp.overlaps(address, size):
                raise WatchedAccess(address, size, "watched read")
        return self.inner.read(address, size)

    def write(self, address: int, data: bytes) -> None:
        for wp in self.watches:
            if wp.access != "x" and wp.overlaps(address, len(data)):
                raise WatchedAccess(address, len(data), "watched write")
        self.inner.write(address, data)


def guard(p: Any, t: Any) -> Any:
    """The emu State to emulate on for thread `t`: its LiveState, or, while `p` has
    watchpoints, a GuardedState over it (for any emulation of a live thread)."""
    if not p.watchpoints:
        return t.live
    return GuardedState(t.live, p.watchpoints)
