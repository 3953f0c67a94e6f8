"""The user stack at a hit, named: what `hit.stack()` returns and `stepper probe --stack`
prints, aggregates and folds.

    for frame in hit.stack():            # innermost first
        print(frame)                     # work+0x1c (prog.c:12), or libc.so.6+0x2a1ca

Why a module: stepper.unwind walks the frames of one stopped thread; a probe asks for that
at every hit, so what repeats is kept here, per traced process: its code objects (read once,
again when a pc falls outside all of them: a library loaded since), and per pc the named
frame (symbol, offset, source line). The stack itself is read with one process_vm_readv per
hit (a window from rsp up, clipped where the mapping ends); a read outside the window (a
signal handler on an alternate stack, a huge frame) falls back to an ordinary read.

Names come from the object's symbol tables (stepper.symbols: `.symtab`, a separate debug file
found by build-id or `.gnu_debuglink`, `.dynsym`; PLT stubs as NAME@plt; the vDSO's own
`.dynsym`); file:line from the DWARF line table when the object or its debug file has one
(the statement row at or before the pc; for a return address, the call's row: pc - 1).
"""

from __future__ import annotations

import bisect
import functools
import os
import struct
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from . import kernel, unwind
from .cfi_expr import UnwindError
from .errors import StepperError
from .symbols import ElfSymbols
from .unwind_objects import CodeObject, find, process_objects

__all__ = ["StackFrame", "StackReader", "reader_of", "folded_name"]

#: Bytes of stack read at each hit, from rsp up (ten frames of ordinary C fit), then
#: doubled on demand up to WINDOW_MAX; the copy costs the kernel time per byte.
WINDOW = 2048
WINDOW_MAX = 1 << 16
#: Frames at most in one stack (gdb's `bt` has no limit; perf and bpftrace stop at 127).
LIMIT = 64
_U64 = struct.Struct("<Q").unpack_from
MASK = unwind.MASK
_UNSEEN = object()


@dataclass(frozen=True, slots=True)
class StackFrame:
    """One physical frame, named. `pc` is where the innermost frame stopped, or a caller's
    return address; `function`/`offset` from the symbol tables (None where no symbol covers
    the pc), `object` the file (or "[vdso]") that holds it, `file`/`line` from DWARF, `signal`
    for a signal trampoline. `error` says why unwinding stopped after this frame, if it did
    before the outermost frame."""

    pc: int
    function: str | None
    offset: int | None
    object: str | None
    vaddr: int | None = None        # link-time address of pc in `object`
    file: str | None = None
    line: int | None = None
    signal: bool = False
    error: str | None = None

    def __hash__(self) -> int:    # stacks are counted by value: hash what tells frames apart
        return hash((self.pc, self.vaddr))

    def __str__(self) -> str:
        if self.function is not None:
            text = f"{self.function}+{self.offset or 0:#x}"
            return text + (f" ({self.file}:{self.line})" if self.file is not None else "")
        if self.object is not None and self.vaddr is not None:
            return f"{os.path.basename(self.object)}+{self.vaddr:#x}"
        return f"{self.pc:#x}"


def folded_name(frame: StackFrame) -> str:
    """A frame's name in the folded format (flame graphs merge frames by name): the
    function, else `[object]`, else `[unknown]`; `;` is the separator there, so none inside."""
    if frame.function is not None:
        name = frame.function
    elif frame.object is not None:
        name = f"[{os.path.basename(frame.object)}]"
    else:
        name = "[unknown]"
    return name.replace(";", ":")


class _Window:
    """read(address, size) served from one snapshot of the stack when it holds the bytes;
    a read just past it grows the snapshot (one more process_vm_readv, twice as large), a
    read elsewhere (an alternate signal stack) is done on its own."""

    __slots__ = ("start", "data", "fallback", "vm", "ended")

    def __init__(self, vm: kernel.VmAccess, start: int,
                 fallback: Callable[[int, int], bytes]) -> None:
        self.start, self.vm, self.fallback = start, vm, fallback
        self.data = vm.read_upto(start, WINDOW)
        self.ended = len(self.data) < WINDOW          # the end of the stack's mapping

    def __call__(self, address: int, size: int) -> bytes:
        at = address - self.start
        data = self.data
        if at >= 0 and at + size <= len(data):
            return data[at:at + size]
        while at >= 0 and not self.ended and at + size <= WINDOW_MAX and \
                at + size > len(data):
            want = min(max(len(data), at + size - len(data)), WINDOW_MAX - len(data))
            more = self.vm.read_upto(self.start + len(data), want)
            self.ended = len(more) < want
            data = self.data = data + more
        if at >= 0 and at + size <= len(data):
            return data[at:at + size]
        return self.fallback(address, size)


class StackReader:
    """The stacks of one traced process (one program image: an exec needs a new reader)."""

    def __init__(self, pid: int, read: Callable[[int, int], bytes], exe: str | None = None,
                 plans: bool = True) -> None:
        """`plans`: walk stacks through the cached per-pc plans where they apply (False:
        every stack through stepper.unwind.frames, the general unwinder; the two give the
        same frames, which the tests check)."""
        self.pid = pid
        self.use_plans = plans
        self.exe = exe
        self.read = read
        self.vm = kernel.VmAccess(pid)
        self._objects: list[CodeObject] | None = None
        self._named: dict[tuple[int, bool], StackFrame] = {}
        self._missed: set[int] = set()
        #: pc -> the frame's plan (see _plan), or None where the walk needs the general
        #: unwinder: for an innermost frame (stopped at pc) and for a caller (returns to pc)
        self._innermost: dict[int, tuple | None] = {}
        self._callers: dict[int, tuple | None] = {}

    def objects(self) -> list[CodeObject]:
        if self._objects is None:
            self._objects = process_objects(self.pid, self.read)
            self._innermost.clear()
            self._callers.clear()
        return self._objects

    def stack(self, regs: Mapping[str, int], limit: int = LIMIT) -> list[StackFrame]:
        """The named frames of a thread stopped with registers `regs`, innermost first."""
        window = _Window(self.vm, regs["rsp"], self.read)
        fast = self._walk(regs, window, limit) if self.use_plans else None
        if fast is not None:
            return fast
        raw = unwind.frames(regs, window, self.objects(), limit)
        lost = [f.pc for f in raw if f.object is None and f.pc not in self._missed]
        if lost:      # a pc in no known object: a library mapped since; look once per pc
            if len(self._missed) > 4096:
                self._missed.clear()
            self._missed.update(lost)
            self._objects = None
            raw = unwind.frames(regs, window, self.objects(), limit)
        named = []
        exact = True
        for frame in raw:
            named.append(self._name(frame, exact))
            exact = frame.signal
        return named

    def _walk(self, regs: Mapping[str, int], read: Callable[[int, int], bytes],
              limit: int) -> list[StackFrame] | None:
        """The stack through the plans alone: per frame a dict lookup, an addition, one
        read from the window and the unpacking of the saved registers. None when a frame has
        no plan (no CFI, a signal trampoline, an expression rule, a pc in no known object) or
        the walk would stop on an error: stepper.unwind.frames then does the whole stack
        and says why (the result is the same, frame for frame)."""
        pc = regs["rip"]
        plan = self._innermost.get(pc, _UNSEEN)
        if plan is _UNSEEN:
            plan = self._plan(pc, True)
        plans = self._callers
        if isinstance(read, _Window):
            start, data = read.start, read.data
        else:
            start, data = 0, b""
        current: dict[str, int] = {}
        rsp, inner = regs["rsp"], True
        out: list[StackFrame] = []
        while plan is not None and len(out) < limit:
            frame, base, offset, low, span, saved, ra = plan
            out.append(frame)
            if inner:          # the innermost frame: its CFA may be based on any register
                value = regs.get(base)
                current = {name: regs[name] for name in unwind.CALLEE_SAVED if name in regs}
                inner = False
            else:
                value = rsp if base == "rsp" else current.get(base)
            if value is None:
                return None
            cfa = (value + offset) & MASK
            if ra is not None and cfa <= rsp:
                return None
            at = cfa + low - start
            if span and (at < 0 or at + span > len(data)):   # past the window, or no window
                try:
                    chunk = read((cfa + low) & MASK, span)
                except UnwindError:
                    return None
                if len(chunk) < span:
                    return None
                if isinstance(read, _Window):
                    start, data = read.start, read.data
                    at = cfa + low - start
                    if at < 0 or at + span > len(data):
                        data, at, start = chunk, 0, cfa + low
                else:
                    data, at, start = chunk, 0, cfa + low
            if ra is None:                     # the return address is undefined: outermost
                return out
            rsp = cfa
            for name, where in saved:
                current[name] = _U64(data, at + where)[0]
            pc = _U64(data, at + ra)[0]
            if not pc:
                return out                     # a zero return address ends stacks
            plan = plans.get(pc, _UNSEEN)
            if plan is _UNSEEN:
                plan = self._plan(pc, False)
        return out if plan is not None else None

    def _plan(self, pc: int, exact: bool) -> tuple | None:
        """What unwinding the frame at `pc` takes when its CFI row is the common kind (CFA =
        register + offset; the saved registers, the return address among them, at CFA+N;
        nothing else but undefined rules), named once: (StackFrame, CFA base register, CFA
        offset, low, span, the saved registers but rip, where rip is or None in the
        outermost frame) as in stepper.cfi.Row; the outermost frame's CFA and saved
        registers are still worked out, as stepper.unwind does, so that an error there
        (an unknown base register, unreadable memory) goes the same way."""
        plans = self._innermost if exact else self._callers
        if len(plans) > 65536:
            plans.clear()
        lookup = pc if exact else pc - 1
        plan = None
        obj = find(self.objects(), lookup)
        try:
            row = obj.cfi.row(lookup - obj.bias) if obj is not None else None
        except UnwindError:
            row = None
        if row is not None and not row.signal and row.base is not None \
                and unwind.RA in row.rules:
            undefined = [n for n, rule in row.others if rule.type == "UNDEFINED"]
            if len(undefined) == len(row.others) and \
                    (unwind.RA in undefined or not undefined):
                ra = [at for name, at in row.saved if name == "rip"]
                frame = unwind.Frame(pc=pc, regs={}, object=obj.path)
                unwind._name(frame, obj, lookup)
                named = self._name(frame, exact)
                saved = tuple(item for item in row.saved if item[0] != "rip")
                if unwind.RA in undefined:
                    plan = (named, row.base, row.cfa.offset, row.low, row.span, saved, None)
                elif ra:
                    plan = (named, row.base, row.cfa.offset, row.low, row.span, saved, ra[0])
        plans[pc] = plan
        return plan

    def _name(self, frame: unwind.Frame, exact: bool) -> StackFrame:
        key = (frame.pc, exact)
        found = self._named.get(key)
        if found is None or frame.error is not None or found.signal != frame.signal:
            obj = find(self.objects(), frame.pc if exact else frame.pc - 1)
            vaddr = file = line = None
            if obj is not None:
                vaddr = frame.pc - obj.bias
                if obj.image is None and frame.function is not None:
                    floor = vaddr - (frame.offset or 0)     # no row of another function
                    file, line = source_line(obj.path, vaddr if exact else vaddr - 1, floor)
            found = StackFrame(frame.pc, frame.function, frame.offset, frame.object, vaddr,
                               file, line, frame.signal, frame.error)
            if frame.error is None:
                if len(self._named) > 65536:
                    self._named.clear()
                self._named[key] = found
        return found


@functools.lru_cache(maxsize=128)
def _line_rows(path: str, size: int, mtime: int) -> tuple[list[int], list[tuple[str, int]]]:
    """(sorted statement addresses, (file, line) of each) of the file's DWARF line table."""
    try:
        symbols = ElfSymbols.load(path)
        if not symbols.has_lines:
            return [], []
        rows = sorted((address, file, line)
                      for file, lines in symbols._line_index().items()
                      for line, addresses in lines.items() for address in addresses)
    except (StepperError, OSError, ValueError):
        return [], []
    return [r[0] for r in rows], [(r[1], r[2]) for r in rows]


def source_line(path: str, vaddr: int, floor: int = 0) -> tuple[str | None, int | None]:
    """(source file, line) of link-time address `vaddr` in ELF file `path`: the statement row
    at or before it and at or after `floor` (the function's start: a function without line
    rows, such as one from an object built without -g, gets none), else (None, None)."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        return None, None
    addresses, rows = _line_rows(real, st.st_size, st.st_mtime_ns)
    i = bisect.bisect_right(addresses, vaddr) - 1
    if i < 0 or addresses[i] < floor:
        return None, None
    return rows[i]


_readers: "weakref.WeakKeyDictionary[Any, StackReader]" = weakref.WeakKeyDictionary()


def reader_of(process: Any) -> StackReader:
    """The StackReader of a traced process (stepper.process), made at its first stack and
    made again after an exec (another image, other objects)."""
    reader = _readers.get(process)
    exe = getattr(process, "exe", None)
    if reader is None or reader.pid != process.pid or reader.exe != exe:
        reader = _readers[process] = StackReader(process.pid, process.read_memory, exe)
    return reader
