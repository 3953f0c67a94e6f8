"""Return breakpoints: report a function's return without ever touching the stack, and write
back what a callback changed in a hit's registers.

The GDB FinishBreakpoint way: at a function's entry the return address is `[rsp]` and the
frame's CFA (the stack pointer right after the return) is `rsp + 8`; elsewhere the CFI
unwinder gives both (stepper.unwind.caller). An INT3 goes at the return address and a hit
there is that frame's return when it is the same thread with rsp == the CFA. The return
address on the stack is never rewritten (the hijack that breaks uretprobes on Go, coroutines,
C++ unwinding and backtrace()).

One INT3 per return address (a `Site`), shared by every pending return there (recursion,
threads, several probed functions returning to one place); each thread keeps its pending
frames in one list (`Returns.by_tid`). A user breakpoint at the address serves the returns
too: its callback runs after the returns are reported.

Once nothing is pending at an address, our INT3 lingers there (at most LINGER addresses, the
oldest goes first): the next call's return then costs no insertion and no removal (two
writes and a read of the program's memory per call of a probed function). A thread that
reaches a lingering INT3 with nothing to report there (the address is also a jump target, or
the entry probe went) steps over it like any breakpoint, and that INT3 goes then: at most
one such trap per address between two returns.

Abandoned frames (longjmp, an exception, a frame a signal handler never returned to) never
return: a pending frame of a thread is expired (counted in its entry breakpoint's
`stats.expired`) when that thread, on the same stack, arms a new frame whose CFA is above
it, or arms the same function again at the same CFA, or is seen at a return breakpoint with
rsp above it. A tail call (the function `jmp`s to another) leaves the CFA as it was: the
return comes to the caller with rsp == CFA and reports both functions; a function that
tail-calls itself is reported once, its earlier entries expired. Stacks are told apart by the
mapping holding the CFA (its end: a main stack grows down, its end stays): a signal handler
on a sigaltstack, or a context switched by swapcontext, never expires the other stack's
frames. A stack that moves (Go's goroutine stacks grow by copying) cannot be matched.

fork: the child gets copies of the forking thread's pending frames (the function returns in
both processes); the other threads' pending frames stay with the parent, and their INT3s
leave the child's memory. exec: every pending frame is dropped with the old image.
"""

from __future__ import annotations

import bisect
import ctypes
import time
from dataclasses import dataclass
from typing import Any, Callable

from . import kernel, maps, unwind, unwind_objects
from .errors import StepperError
from .kernel import RAX, REG_INDEX, RIP, RSP
from .records import Breakpoint, Hit, Regs, Thread
from .unwind import UnwindError

#: Return addresses whose INT3 stays when nothing is pending there (per process).
LINGER = 64

REG_ITEMS = tuple(REG_INDEX.items())
REG_NAMES = tuple(name for name, _ in REG_ITEMS)


@dataclass(frozen=True)
class Return:
    """What on_return receives: the return `value` (rax), the time since the entry hit
    (`duration_ns`, as the tracer saw them), the `entry` Hit (None for a return armed away
    from an entry), the thread, the return address and the registers there."""

    value: int
    duration_ns: int
    entry: Hit | None
    tid: int
    address: int
    regs: dict[str, int]


class Pending:
    """One armed return: thread `tid` is expected at `site` with rsp == `cfa`."""

    __slots__ = ("tid", "site", "cfa", "stack", "function", "entry", "start_ns", "callback",
                 "owner")

    def __init__(self, tid: int, site: int, cfa: int, stack: int, function: int | None,
                 entry: Hit | None, callback: Callable, owner: Breakpoint | None) -> None:
        self.tid = tid
        self.site = site
        self.cfa = cfa
        self.stack = stack  # which stack the frame is on (the end of its mapping)
        self.function = function  # the entry address, when armed at one
        self.entry = entry
        self.start_ns = time.perf_counter_ns()
        self.callback = callback
        self.owner = owner  # the entry breakpoint (its stats count expiries)

    def copy_for(self, tid: int, owner: Breakpoint | None) -> "Pending":
        other = Pending(tid, self.site, self.cfa, self.stack, self.function, self.entry,
                        self.callback, owner)
        other.start_ns = self.start_ns
        return other


class Returns:
    """The return breakpoints of one traced process (`p.returns`, made on first need)."""

    def __init__(self, p: Any) -> None:
        self.p = p
        self.sites: dict[int, Breakpoint] = {}   # return address -> the INT3 serving it
        self.count: dict[int, int] = {}          # return address -> frames pending there
        self.by_tid: dict[int, list[Pending]] = {}
        self.spare: dict[int, Breakpoint] = {}   # decoded once, re-inserted on need
        self.stale: set[int] = set()             # our INT3s removed while threads ran
        #: sites of ours with nothing pending, still inserted (oldest first)
        self.lingering: dict[int, None] = {}
        self._ranges: list[tuple[int, int]] = []  # mappings, sorted: the stack lookup

    # --- stacks ----------------------------------------------------------------------

    def stack_of(self, address: int) -> int:
        """The end of the mapping holding `address` (a stack's identity; 0 if none)."""
        for attempt in (0, 1):
            i = bisect.bisect_right(self._ranges, (address, 1 << 64)) - 1
            if i >= 0 and self._ranges[i][0] <= address < self._ranges[i][1]:
                return self._ranges[i][1]
            if attempt == 0:  # a new stack (a thread, a grown main stack): read the maps
                self._ranges = sorted((m.start, m.end) for m in maps.read(self.p.pid))
        return 0

    # --- arming ----------------------------------------------------------------------

    def add(self, pending: Pending) -> None:
        self._take(pending.site)  # first: StepperError leaves nothing changed
        frames = self.by_tid.setdefault(pending.tid, [])
        kept = []
        for f in frames:  # frames below the new one on its stack are gone
            if f.stack == pending.stack and (
                    f.cfa < pending.cfa or (f.cfa == pending.cfa and f.function is not None
                                            and f.function == pending.function)):
                self._expire(f)
            else:
                kept.append(f)
        kept.append(pending)
        self.by_tid[pending.tid] = kept

    def _take(self, address: int) -> None:
        n = self.count.get(address, 0)
        if n == 0:
            if address in self.lingering:
                del self.lingering[address]   # still in: nothing to write
            elif address not in self.sites:
                self.sites[address] = self._insert(address)
        self.count[address] = n + 1

    def _insert(self, address: int) -> Breakpoint:
        p = self.p
        bp = p.breakpoints.by_address.get(address)
        if bp is not None:  # a user breakpoint: its INT3 serves the returns too
            bp.hook = at_hit
            return bp
        bp = self.spare.pop(address, None)
        size = len(bp.insn.bytes) if bp is not None else 0
        if bp is not None and p.breakpoints.read_original(address, size) == bp.insn.bytes:
            p.breakpoints.insert(bp)
        else:
            bp = p.add_breakpoint(address)  # validated and decoded (StepperError if not)
        bp.hook, bp.internal = at_hit, True
        self.stale.discard(address)
        return bp

    def _release(self, address: int, n: int = 1) -> None:
        left = self.count.get(address, 0) - n
        if left > 0:
            self.count[address] = left
            return
        self.count.pop(address, None)
        bp = self.sites.get(address)
        if bp is None:
            return
        if bp.internal:   # stays in, for the next return here
            lingering = self.lingering
            lingering[address] = None
            if len(lingering) > LINGER:
                self._drop(next(iter(lingering)))
            return
        del self.sites[address]
        if bp.on_return is None:
            bp.hook = None  # the user's breakpoint alone again: the plain hit path

    def _drop(self, address: int) -> None:
        """Remove a lingering INT3 of ours (nothing pending there)."""
        del self.lingering[address]
        bp = self.sites.pop(address)
        self.p.breakpoints.remove(bp)
        self.spare[address] = bp
        self.stale.add(address)  # a thread may have trapped on it already

    def _expire(self, f: Pending) -> None:
        if f.owner is not None:
            f.owner.stats.expired += 1
        self._release(f.site)

    # --- a hit at a return address -------------------------------------------------------

    def returned(self, t: Thread, address: int) -> list[Pending]:
        """Thread `t` (registers in t.regs) is at return address `address`: the frames that
        return here, in order; frames it has left behind on its stack are expired."""
        frames = self.by_tid.get(t.tid)
        if not frames:
            if address in self.lingering:
                self._drop(address)
            return []
        rsp = t.regs[RSP]
        stack = self.stack_of(rsp)
        matched, kept = [], []
        for f in frames:
            if f.stack != stack or f.cfa > rsp:
                kept.append(f)
            elif f.cfa == rsp and f.site == address:
                matched.append(f)
            else:
                self._expire(f)
        if len(kept) != len(frames):
            if kept:
                self.by_tid[t.tid] = kept
            else:
                del self.by_tid[t.tid]
        if matched:
            self._release(address, len(matched))
        elif address in self.lingering:
            self._drop(address)   # reached with nothing to report: not a place to linger
        return matched

    # --- what the process goes through ---------------------------------------------------

    def thread_gone(self, tid: int) -> None:
        for f in self.by_tid.pop(tid, []):
            self._release(f.site)

    def is_stale(self, t: Thread, address: int) -> bool:
        """A SIGTRAP at `address` + 1 from one of our INT3s removed while `t` ran into it:
        `t` is put back at `address` (True), the program never sees it."""
        if address not in self.stale or address in self.p.breakpoints.by_address:
            return False
        bp = self.spare.get(address)
        if bp is None or bp.original == b"\xcc" or self.p.mem.read(address, 1) != bp.original:
            return False
        if kernel.getsiginfo(t.tid).code != kernel.SI_KERNEL:
            return False  # not an INT3 (the program's own single-step trap)
        t.regs[RIP] = address
        kernel.setregs(t.tid, t.regs)
        return True


def of(p: Any) -> Returns:
    r = p.returns
    if r is None:
        r = p.returns = Returns(p)
    return r


def arm(p: Any, t: Thread, entry: Hit | None, callback: Callable[[Return], Any],
        owner: Breakpoint | None = None) -> Pending:
    """Arm the return of stopped thread `t`'s current frame: `callback(Return)` when it
    returns. At a function's entry (`entry`, the Hit there) the return address is [rsp];
    elsewhere (entry None) the CFI unwinder finds it. StepperError if there is no frame to
    return to, or its return address cannot take a breakpoint."""
    regs = t.regs
    if entry is not None:
        rsp = regs[RSP]
        site = int.from_bytes(p.mem.read(rsp, 8), "little")
        cfa = rsp + 8
        function: int | None = entry.address
    else:
        now = dict(zip(REG_NAMES, (regs[i] for _, i in REG_ITEMS)))
        read = p.read_memory
        try:
            back = unwind.caller(now, read, unwind_objects.process_objects(p.pid, read))
        except UnwindError as e:
            raise StepperError(f"cannot find the return of the function at {now['rip']:#x}: "
                               f"{e}") from None
        if back is None or not back.get("rip"):
            raise StepperError(f"the function at {now['rip']:#x} has no frame to return to "
                               "(it is the outermost frame)")
        site, cfa, function = back["rip"], back["rsp"], None
    r = of(p)
    pending = Pending(t.tid, site, cfa, r.stack_of(cfa), function, entry, callback, owner)
    r.add(pending)
    return pending


def at_hit(p: Any, bp: Breakpoint, t: Thread, hit: Hit) -> None:
    """A breakpoint's hook (Breakpoint.hook), before its callback: report the returns that
    come to this address, then arm this entry's return if it has on_return."""
    r = p.returns
    if r is not None and bp.address in r.sites:
        for f in r.returned(t, bp.address):
            if f.owner is not None:
                f.owner.stats.returns += 1
            f.callback(Return(t.regs[RAX], time.perf_counter_ns() - f.start_ns, f.entry,
                              t.tid, bp.address, hit.regs))
    if bp.on_return is not None:
        try:
            arm(p, t, hit, bp.on_return, bp)
        except StepperError:
            bp.stats.unarmed += 1  # e.g. a return address in no executable mapping


def write_back(t: Thread, regs: Regs, address: int) -> bool:
    """Apply a callback's register writes to stopped thread `t` (its buffer, then the
    kernel). True when it moved rip: the displaced instruction is skipped."""
    buf = t.regs
    copy = getattr(regs, "buffer", None)   # a Regs.at: its copy, the writes in it
    if copy is not None:
        ctypes.memmove(buf, copy, ctypes.sizeof(buf))
    else:
        for name, i in REG_ITEMS:
            buf[i] = regs[name]
    kernel.setregs(t.tid, buf)
    return buf[RIP] != address


# --- hooks of the process's life --------------------------------------------------------

def added(p: Any, bp: Breakpoint, on_return: Callable | None) -> None:
    """A user breakpoint was inserted (taking over a return INT3 there, if any)."""
    if on_return is not None:
        bp.on_return, bp.hook = on_return, at_hit
    r = p.returns
    if r is not None and bp.address in r.lingering:
        del r.lingering[bp.address], r.sites[bp.address]   # ours stepped aside (before_add),
        # and nothing waits there
    elif r is not None and bp.address in r.sites:
        r.sites[bp.address] = bp
        bp.hook = at_hit


def before_add(p: Any, address: int) -> None:
    """A user breakpoint is about to go at `address`: an INT3 of ours there steps aside."""
    r = p.returns
    bp = p.breakpoints.by_address.get(address)
    if r is not None and bp is not None and bp.internal:
        p.breakpoints.remove(bp)
        r.spare[address] = bp


def removed(p: Any, bp: Breakpoint) -> None:
    """A user breakpoint was removed: returns still pending there keep an INT3 of ours."""
    r = p.returns
    if r is not None and r.sites.get(bp.address) is bp:
        r.sites[bp.address] = r._insert(bp.address)


def forked(parent: Any, child: Any, t: Thread, vfork: bool) -> None:
    """`child` was forked by `t`: it gets copies of t's pending frames; the INT3s only other
    threads were waiting at leave its memory (a vfork child shares the memory: kept)."""
    r = parent.returns
    if r is None:
        return
    c = of(child)
    c._ranges = list(r._ranges)
    copies = child.breakpoints.by_address
    mine = [f.copy_for(child.pid, None if f.owner is None else
                       copies.get(f.owner.address, f.owner))
            for f in r.by_tid.get(t.tid, [])]
    if mine:
        c.by_tid[child.pid] = mine
    for f in mine:
        c.count[f.site] = c.count.get(f.site, 0) + 1
    for address in r.sites:
        copy = child.breakpoints.by_address.get(address)
        if copy is None:
            continue
        if address in c.count or vfork:  # a vfork child runs on the parent's INT3s
            copy.hook = at_hit
            c.sites[address] = copy
        elif copy.internal:
            child.breakpoints.remove(copy)
        elif copy.on_return is None:
            copy.hook = None
