"""One instruction of a stopped thread, executed by emulation: a single-step with no trap.

`emulate_one(p, t, all_stopped)` runs the instruction at `t.regs[rip]` with the emu plan
compiled for live threads (stepper.strategies.emulate.compile_live: ptrace-buffer keys, the
host CPU as flags oracle, so every rflags bit is the CPU's). It either executes the whole
instruction (registers in `t.regs`, memory through the thread's LiveState, whose accesses
honour page protections) or changes nothing and returns False, and the caller single-steps
the instruction on the CPU instead. docs/engine.md ("Stepping by emulation") says when.

Plans are cached per process (a WeakKeyDictionary here, keyed by the process object) and by
address, with the raw bytes they were compiled from, and every use compares those bytes with
the bytes in memory now; a changed byte means recompiling. Where "now" comes from:
- another thread may run (`all_stopped` false), or the code is on a shared mapping: the
  instruction's bytes are read at each step (one process_vm_readv);
- every thread is stopped: from a snapshot of the code page, read once per page and
  `kernel.epoch` (bumped by every ptrace resume and every write of the tracer's into a
  tracee). While the epoch stands, no program instruction ran and nothing wrote, so the page
  is unchanged, except by the emulated instructions themselves: a store of theirs onto a
  snapshotted page (self-modifying code) drops the snapshots.
An exec gives the process a new /proc/PID/mem handle; a cache whose handle is not the
process's is dropped whole, so a new image never sees the old image's plans.
"""

from __future__ import annotations

import weakref

import emu
from emu import DecodeError, MemoryFault, Unsupported
from emu.decode import MAX_LENGTH, touches_memory

from . import kernel, live_vector, maps
from .strategies.emulate import compile_live

RIP = kernel.RIP
EFLAGS = kernel.EFLAGS
TF = kernel.TF
PAGE_SHIFT = 12
PAGE = 1 << PAGE_SHIFT


class _Plan:
    """What one address compiles to: the raw bytes (as in memory, INT3s included) it was
    compiled from, and the plan, or None (`reason` says why it is not emulated)."""

    __slots__ = ("raw", "size", "plan", "vector", "atomic", "memory", "shared_code", "reason")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.size = len(raw)
        self.plan = None
        self.vector = self.atomic = self.memory = self.shared_code = False
        self.reason: str | None = None


class _Cache:
    """The plans of one process (by address) and the code pages read in `epoch`."""

    __slots__ = ("mem", "plans", "epoch", "pages", "maps", "maps_epoch", "stored_on_code",
                 "watched", "data", "data_maps", "__weakref__")

    def __init__(self, mem) -> None:
        self.mem = mem
        self.plans: dict[int, _Plan] = {}
        self.epoch = -1
        self.pages: dict[int, bytes | None] = {}  # page number -> its bytes in this epoch
        self.maps: list | None = None
        self.maps_epoch = -1
        self.stored_on_code = False
        self.watched: _Watched | None = None  # the last one made (a step loop reuses it)
        #: data pages read in `epoch` (every thread stopped): page -> its bytes, kept up to
        #: date by the emulated stores, or None (not snapshotted: shared, [vvar], unreadable)
        self.data: dict[int, bytearray | None] = {}
        self.data_maps: list | None = None  # the mappings, read once per epoch for `data`


_caches: "weakref.WeakKeyDictionary[object, _Cache]" = weakref.WeakKeyDictionary()
#: (weak reference to the process, its cache) of the last call: a step loop skips the
#: WeakKeyDictionary lookup, and a process that is gone is not kept alive.
_last: tuple = (lambda: None, None)


class _Watched:
    """The State a memory-touching plan runs on: the caller's state, with stores onto a
    snapshotted code page noticed, and (atomic instructions) accesses to shared mappings
    refused before anything is written."""

    __slots__ = ("regs", "_state", "_cache", "_p", "_atomic", "snap")

    def __init__(self, state, cache: _Cache, p, atomic: bool) -> None:
        self.regs = state.regs
        self._state, self._cache, self._p, self._atomic = state, cache, p, atomic
        #: loads may come from this epoch's data-page snapshots (every thread stopped, and
        #: the state is the thread's own LiveState: no watchpoint guard to go through)
        self.snap = False

    def read(self, address: int, size: int) -> bytes:
        if self._atomic:
            self._refuse_shared(address, size, "read")
        if self.snap:
            page = address >> PAGE_SHIFT
            if page == (address + size - 1) >> PAGE_SHIFT:
                data = self._cache.data.get(page, False)
                if data is False:
                    data = _data_page(self._p, self._state.vm, self._cache, page)
                if data is not None:
                    offset = address & (PAGE - 1)
                    return bytes(data[offset:offset + size])
        return self._state.read(address, size)

    def write(self, address: int, data: bytes) -> None:
        if self._atomic:
            self._refuse_shared(address, len(data), "write")
        cache = self._cache
        pages = cache.pages
        first, last = address >> PAGE_SHIFT, (address + len(data) - 1) >> PAGE_SHIFT
        if pages and (first in pages or last in pages):
            cache.stored_on_code = True
        self._state.write(address, data)  # MemoryFault: nothing written
        snaps = cache.data
        if snaps and (first in snaps or last in snaps):  # the snapshots follow the store
            for page in range(first, last + 1):
                snap = snaps.get(page)
                if snap is not None:
                    lo = max(address, page << PAGE_SHIFT)
                    hi = min(address + len(data), (page + 1) << PAGE_SHIFT)
                    snap[lo & (PAGE - 1):(lo & (PAGE - 1)) + hi - lo] = \
                        data[lo - address:hi - address]

    def _refuse_shared(self, address: int, size: int, access: str) -> None:
        """A locked access to shared memory is atomic for every process mapping it; ours is a
        read then a write, which another process could slip between: refused (MemoryFault,
        nothing written yet: the read of a read-modify-write comes first)."""
        for at in (address, address + size - 1):
            mapping = maps.find(_mappings(self._p, self._cache), at)
            if mapping is None or mapping.perms[3:4] != "p":
                raise MemoryFault(address, size, access)


def _data_page(p, vm, cache: _Cache, page: int) -> bytearray | None:
    """Snapshot data page `page` for this epoch (one process_vm_readv for every later load
    from it while no thread runs): only a private mapping's, never [vvar] (the kernel
    updates it) nor a shared one (another process may write it). None: not snapshotted."""
    if cache.data_maps is None:
        cache.data_maps = maps.read(p.pid)
    mapping = maps.find(cache.data_maps, page << PAGE_SHIFT)
    data = None
    if mapping is not None and mapping.perms[3:4] == "p" and not mapping.path.startswith("[vvar"):
        raw = vm.read(page << PAGE_SHIFT, PAGE)
        data = bytearray(raw) if raw is not None else None
    cache.data[page] = data
    return data


def _mappings(p, cache: _Cache) -> list:
    """/proc/PID/maps, read again only when the epoch moved (mappings change only when the
    program runs, which moves it)."""
    if cache.maps is None or cache.maps_epoch != kernel.epoch:
        cache.maps = maps.read(p.pid)
        cache.maps_epoch = kernel.epoch
    return cache.maps


def _run_vector(plan, tid: int, regs, watched: _Watched) -> None:
    """An SSE plan: the xmm registers from the thread's FXSAVE image (written back only if
    one changed), the general ones from `regs`, memory through `watched`."""
    fp = kernel.FpregsBuffer()
    kernel.getfpregs(tid, fp)
    watched.regs = vector_regs = live_vector.VectorRegs(regs, fp)
    plan(watched)
    if vector_regs.dirty:
        kernel.setfpregs(tid, fp)


def _code(vm, cache: _Cache, address: int, size: int, fresh: bool) -> bytes | None:
    """The `size` bytes at `address` as they are now: read now (`fresh`), or from the
    snapshot of their page(s) taken in this epoch. None: not readable."""
    if fresh:
        return vm.read(address, size)
    first, last = address >> PAGE_SHIFT, (address + size - 1) >> PAGE_SHIFT
    pages = cache.pages
    data = b""
    for page in range(first, last + 1):
        snap = pages.get(page)
        if snap is None:
            snap = pages[page] = vm.read(page << PAGE_SHIFT, PAGE)
            if snap is None:
                del pages[page]
                return None
        data += snap
    offset = address & (PAGE - 1)
    return data[offset:offset + size]


def _compile(p, vm, cache: _Cache, rip: int, fresh: bool) -> _Plan | None:
    """Decode and compile the instruction at `rip` (breakpoint bytes hidden) and cache it;
    None if its bytes cannot be read or do not decode (the CPU raises the genuine fault)."""
    raw = _code(vm, cache, rip, MAX_LENGTH, fresh)
    if raw is None:  # the window may run into an unreadable page: up to the page's end
        raw = _code(vm, cache, rip, PAGE - (rip & (PAGE - 1)), fresh)
        if raw is None:
            return None
    try:
        insn = emu.decode(p.read_memory(rip, len(raw)), rip)
    except (DecodeError, OSError):
        return None
    entry = cache.plans[rip] = _Plan(raw[:insn.length])
    entry.atomic = insn.atomic
    entry.memory = touches_memory(insn.capstone)
    try:
        if not insn.emulatable:
            raise Unsupported(insn.reason or "not emulated")
        entry.plan, entry.vector = compile_live(insn)
    except Unsupported as e:
        entry.reason = e.reason
        return entry
    # Code that another process may write (a shared mapping): read at every step.
    mapping = maps.find(maps.read(p.pid), rip)
    entry.shared_code = mapping is None or mapping.perms[3:4] != "p"
    return entry


def emulate_one(p, t, all_stopped: bool, state=None) -> bool:
    """Execute the instruction at `t.regs[rip]` of stopped thread `t` of process `p` by
    emulation. True: done, `t.regs` and memory updated (the caller must PTRACE_SETREGS
    before the thread runs). False: not emulated here (unsupported; a memory access the CPU
    would fault on; an atomic instruction while another thread may run, or on a shared
    mapping; a system call, interrupt or privileged instruction; the program's own trap flag
    set, whose trap only the CPU raises), and nothing was changed.

    `all_stopped`: every thread of the process is stopped (atomic instructions may then be
    emulated, and code bytes may be taken from this epoch's page snapshot). `state`: the
    emu State to run on (a guarding one, e.g. for watchpoints); default `t.live`.
    """
    regs = t.regs
    if regs[EFLAGS] & TF:
        return False
    rip = regs[RIP]
    global _last
    last_p, cache = _last
    if last_p() is not p or cache.mem is not p.mem:
        cache = _caches.get(p)
        if cache is None or cache.mem is not p.mem:  # first use, or a new image (exec)
            cache = _caches[p] = _Cache(p.mem)
        _last = (weakref.ref(p), cache)
    if cache.epoch != kernel.epoch:
        cache.pages = {}
        cache.data = {}
        cache.data_maps = None
        cache.epoch = kernel.epoch
    vm = t.live.vm
    entry = cache.plans.get(rip)
    if entry is not None:
        fresh = entry.shared_code or not all_stopped
        if fresh:
            now = vm.read(rip, entry.size)
        else:
            snap = cache.pages.get(rip >> PAGE_SHIFT)
            offset = rip & (PAGE - 1)
            if snap is not None and offset + entry.size <= PAGE:
                now = snap[offset:offset + entry.size]
            else:
                now = _code(vm, cache, rip, entry.size, False)
        if now != entry.raw:
            entry = None
    if entry is None:
        entry = _compile(p, vm, cache, rip, not all_stopped)
        if entry is None:
            return False
    plan = entry.plan
    if plan is None or (entry.atomic and not all_stopped):
        return False
    if state is None:
        state = t.live
    try:
        if not (entry.memory or entry.vector):
            plan(state)
            return True
        cache.stored_on_code = False
        if entry.vector:
            _run_vector(plan, t.tid, regs, _Watched(state, cache, p, entry.atomic))
        else:
            watched = cache.watched
            if watched is None or watched._state is not state:
                watched = cache.watched = _Watched(state, cache, p, False)
            watched._atomic = entry.atomic
            watched.snap = all_stopped and state is t.live
            plan(watched)
    except (MemoryFault, Unsupported):
        return False
    # Our own stores moved the epoch; they changed no code unless they landed on a
    # snapshotted page.
    if cache.stored_on_code:
        cache.pages = {}
    cache.epoch = kernel.epoch
    return True
