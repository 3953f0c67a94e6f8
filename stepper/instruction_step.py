"""One instruction of a stopped thread, executed by emulation: a single-step with no trap.

`emulate_one(p, t, all_stopped)` runs the instruction at `t.regs[rip]` with the emu plan
compiled for live threads (stepper.strategies.emulate.compile_live: ptrace-buffer keys, the
host CPU as flags oracle, so every rflags bit is the CPU's). It either executes the whole
instruction (registers in `t.regs`, memory through the thread's LiveState, whose accesses
honour page protections) or changes nothing and returns False, and the caller single-steps
the instruction on the CPU instead. docs/engine.md ("Stepping by emulation") says when.

Plans are cached per process (a WeakKeyDictionary here, keyed by the process object) and by
address, with the raw bytes they were compiled from. A cached plan is trusted without reading
memory only while `kernel.epoch` is unchanged since its bytes were last compared, i.e. while
no traced thread ran and the tracer wrote nothing, and only when every thread is stopped.
Otherwise (another thread may run, or something ran or wrote since) the bytes are read again
(one process_vm_readv) and a changed byte means recompiling. An exec replaces the process's
/proc/PID/mem handle, and the cache of a process whose handle changed is dropped whole.
The emulated instruction's own stores are watched: one that lands on a page holding checked
code (self-modifying code) makes every plan be checked again before its next use.
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
    compiled from, and the plan, or None with the reason it is not emulated."""

    __slots__ = ("raw", "plan", "vector", "atomic", "memory", "shared_code", "reason",
                 "first_page", "last_page")

    def __init__(self, address: int, raw: bytes) -> None:
        self.raw = raw
        self.plan = None
        self.vector = self.atomic = self.memory = self.shared_code = False
        self.reason: str | None = None
        self.first_page = address >> PAGE_SHIFT
        self.last_page = (address + len(raw) - 1) >> PAGE_SHIFT


class _Cache:
    """The plans of one process. `checked`: the plans whose bytes were compared at `epoch`;
    `code_pages`: the pages those bytes are on (a store there unchecks everything)."""

    __slots__ = ("mem", "plans", "checked", "epoch", "code_pages", "maps", "maps_epoch",
                 "stored_on_code", "__weakref__")

    def __init__(self, mem) -> None:
        self.mem = mem
        self.plans: dict[int, _Plan] = {}
        self.checked: dict[int, _Plan] = {}
        self.epoch = -1
        self.code_pages: set[int] = set()
        self.maps: list | None = None
        self.maps_epoch = -1
        self.stored_on_code = False

    def uncheck(self) -> None:
        self.checked = {}
        self.code_pages = set()


_caches: "weakref.WeakKeyDictionary[object, _Cache]" = weakref.WeakKeyDictionary()


class _Watched:
    """The State a memory-touching plan runs on: the caller's state, with stores on checked
    code pages noticed, and (atomic instructions) accesses to MAP_SHARED mappings refused
    before anything is written."""

    __slots__ = ("regs", "_state", "_cache", "_p", "_atomic")

    def __init__(self, state, cache: _Cache, p, atomic: bool) -> None:
        self.regs = state.regs
        self._state, self._cache, self._p, self._atomic = state, cache, p, atomic

    def read(self, address: int, size: int) -> bytes:
        if self._atomic:
            self._refuse_shared(address, size, "read")
        return self._state.read(address, size)

    def write(self, address: int, data: bytes) -> None:
        if self._atomic:
            self._refuse_shared(address, len(data), "write")
        cache = self._cache
        pages = cache.code_pages
        if pages and ((address >> PAGE_SHIFT) in pages
                      or ((address + len(data) - 1) >> PAGE_SHIFT) in pages):
            cache.stored_on_code = True
        self._state.write(address, data)

    def _refuse_shared(self, address: int, size: int, access: str) -> None:
        """A locked access to shared memory is atomic for every process mapping it; ours is a
        read then a write, which another process could slip between: refused (MemoryFault,
        nothing written yet: the read of a read-modify-write comes first)."""
        for at in (address, address + size - 1):
            mapping = maps.find(_mappings(self._p, self._cache), at)
            if mapping is None or mapping.perms[3:4] != "p":
                raise MemoryFault(address, size, access)


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


def _cache_of(p) -> _Cache:
    cache = _caches.get(p)
    if cache is None or cache.mem is not p.mem:  # first use, or a new image (exec)
        cache = _caches[p] = _Cache(p.mem)
    return cache


def _check(p, vm, cache: _Cache, rip: int) -> _Plan | None:
    """The plan for the bytes now at `rip`, compared (or compiled) now; None if they cannot
    be read or do not decode (the CPU raises the genuine fault)."""
    known = cache.plans.get(rip)
    if known is not None:
        raw = vm.read(rip, len(known.raw))
        if raw == known.raw:
            _mark_checked(cache, rip, known)
            return known
    raw = vm.read(rip, MAX_LENGTH)
    if raw is None:  # the window may run into an unreadable page: read up to its end
        raw = vm.read(rip, PAGE - (rip & (PAGE - 1)))
        if raw is None:
            return None
    try:
        insn = emu.decode(p.read_memory(rip, len(raw)), rip)
    except (DecodeError, OSError):
        return None
    entry = _compile(p, rip, raw[:insn.length], insn)
    cache.plans[rip] = entry
    _mark_checked(cache, rip, entry)
    return entry


def _compile(p, rip: int, raw: bytes, insn: emu.Instruction) -> _Plan:
    entry = _Plan(rip, raw)
    entry.atomic = insn.atomic
    entry.memory = touches_memory(insn.capstone)
    try:
        if not insn.emulatable:
            raise Unsupported(insn.reason or "not emulated")
        entry.plan, entry.vector = compile_live(insn)
    except Unsupported as e:
        entry.reason = e.reason
        return entry
    mapping = maps.find(maps.read(p.pid), rip)
    # Code another process may write (a shared mapping): never trusted between steps.
    entry.shared_code = mapping is None or mapping.perms[3:4] != "p"
    return entry


def _mark_checked(cache: _Cache, rip: int, entry: _Plan) -> None:
    if entry.shared_code:
        return
    cache.checked[rip] = entry
    cache.code_pages.add(entry.first_page)
    cache.code_pages.add(entry.last_page)


def emulate_one(p, t, all_stopped: bool, state=None) -> bool:
    """Execute the instruction at `t.regs[rip]` of stopped thread `t` of process `p` by
    emulation. True: done, `t.regs` and memory updated (the caller must PTRACE_SETREGS
    before the thread runs). False: not emulated here (unsupported; a memory access the CPU
    would fault on; an atomic instruction while another thread may run, or on a shared
    mapping; a system call, interrupt or privileged instruction; the program's own trap flag
    set, whose trap only the CPU raises), and nothing was changed.

    `all_stopped`: every thread of the process is stopped (atomic instructions may then be
    emulated, and checked plans are trusted without reading the code again). `state`: the
    emu State to run on (a guarding one, e.g. for watchpoints); default `t.live`.
    """
    regs = t.regs
    if regs[EFLAGS] & TF:
        return False
    rip = regs[RIP]
    cache = _caches.get(p)
    if cache is None or cache.mem is not p.mem:
        cache = _cache_of(p)
    epoch = kernel.epoch
    if cache.epoch != epoch:
        cache.uncheck()
        cache.epoch = epoch
    entry = cache.checked.get(rip) if all_stopped else None
    if entry is None:
        entry = _check(p, t.live.vm, cache, rip)
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
        watched = _Watched(state, cache, p, entry.atomic)
        if entry.vector:
            _run_vector(plan, t.tid, regs, watched)
        else:
            plan(watched)
    except (MemoryFault, Unsupported):
        return False
    # Our own stores moved the epoch; they changed no checked code unless they landed on it.
    if cache.stored_on_code:
        cache.uncheck()
    cache.epoch = kernel.epoch
    return True
