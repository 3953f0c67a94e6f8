"""Evaluating parsed fetch arguments (stepper.fetchargs) at a hit: registers from the hit's
dict, memory through the hit's `read` (the program's memory as it sees it, breakpoint bytes
hidden), one read per value; strings with process_vm_readv, one per page they touch (at
most STRING_MAX bytes), through the program's own page permissions. A value that cannot be read is None (a fault); nothing here
writes to the program. What is not in the registers (thread name, @SYMBOL addresses, symbol
names for the `symbol` type, the pid of a thread) is looked up once and kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from . import kernel, located, maps
from .errors import StepperError
from .symbols import ElfFileError, ElfSymbols

if TYPE_CHECKING:  # pragma: no cover
    from .fetchargs import FetchArg

__all__ = ["Fetcher", "HitContext", "compile_fetch", "compile_raw", "pid_of", "STRING_MAX",
           "ARG_REGS"]

STRING_MAX = 256   # bytes of a string fetched at most (the kernel's MAX_STRING_SIZE is 4096)
ARG_REGS = ("rdi", "rsi", "rdx", "rcx", "r8", "r9")
PAGE = 4096


class HitContext:
    """What fetch arguments need beyond registers and memory, for the hit being handled."""

    __slots__ = ("tid", "pid", "address", "retval", "_comms", "_maps", "_symbols", "_vms")

    def __init__(self) -> None:
        self.tid = self.pid = self.address = 0
        self.retval: int | None = None
        self._comms: dict[int, str | None] = {}
        self._maps: dict[int, list] = {}
        self._symbols: dict[tuple[int, str], int | None] = {}
        self._vms: dict[int, kernel.VmAccess] = {}

    def string(self, address: int) -> str | None:
        """The NUL-terminated string at `address` (at most STRING_MAX bytes), read with one
        process_vm_readv when it does not cross a page (two when it does), through the
        program's own page permissions: what the CPU could not read is a fault (None)."""
        if address <= 0 or address >> 64:
            return None
        vm = self._vms.get(self.pid)
        if vm is None:
            vm = self._vms[self.pid] = kernel.VmAccess(self.pid)
        first = min(STRING_MAX, PAGE - (address & (PAGE - 1)))
        data = vm.read(address, first, True)
        if data is None:
            return None
        if len(data) == first < STRING_MAX:   # no NUL on this page: the next one
            more = vm.read(address + first, STRING_MAX - first, True)
            if more is not None:
                data += more
        return data.decode("utf-8", "backslashreplace")

    def comm(self) -> str | None:
        """The thread's name, as of its first hit that asked (read once per thread)."""
        tid = self.tid
        if tid not in self._comms:
            try:
                with open(f"/proc/{tid}/comm") as f:
                    self._comms[tid] = f.read().rstrip("\n")
            except OSError:
                self._comms[tid] = None
        return self._comms[tid]

    def _mappings(self, fresh: bool = False) -> list:
        if fresh or self.pid not in self._maps:
            try:
                self._maps[self.pid] = maps.read(self.tid)
            except (OSError, ValueError):
                self._maps[self.pid] = []
        return self._maps[self.pid]

    def symbol_address(self, name: str) -> int | None:
        """@SYMBOL: the data symbol `name` of the object the probe is in, at run time."""
        key = (self.address, name)
        if key not in self._symbols:
            self._symbols[key] = _variable(self._mappings(), self.address, name)
        return self._symbols[key]

    def describe(self, address: int) -> str:
        """`sym+0xoff` for the symbol type (hex when no symbol covers it)."""
        found = located.containing_symbol(self._mappings(), address)
        if found is None:
            found = located.containing_symbol(self._mappings(fresh=True), address)
        if found is None:
            return hex(address)
        off = address - found.address
        return found.name + (f"+{off:#x}" if off else "")


def _variable(mappings: list, address: int, name: str) -> int | None:
    mapping = maps.find(mappings, address)
    if mapping is None or not mapping.is_file:
        return None
    bias = located.load_bias(mapping)
    try:
        value = ElfSymbols.load(mapping.path).variable(name)
    except ElfFileError:
        return None
    return None if value is None or bias is None else bias + value


_PIDS: dict[int, int] = {}


def pid_of(tid: int) -> int:
    """The process of a thread (its Tgid), read once per thread."""
    pid = _PIDS.get(tid)
    if pid is None:
        pid = tid
        try:
            with open(f"/proc/{tid}/status") as f:
                for line in f:
                    if line.startswith("Tgid:"):
                        pid = int(line.split()[1])
                        break
        except OSError:
            pass
        _PIDS[tid] = pid
    return pid


# -- evaluation --------------------------------------------------------------------------------

class Fetcher:
    """The per-hit side of a FetchArg: `value(regs, read, ctx)`; memory through `read`
    (the program's memory, as it sees it); a fault anywhere gives None.

    `ctx` supplies what is not in the registers: `symbol_address(name)`, `comm()`,
    `retval`, `describe(address)` (for the symbol type)."""

    __slots__ = ("arg", "_loc", "_size", "_signed", "_kind")

    def __init__(self, arg: FetchArg) -> None:
        self.arg = arg
        t = arg.type
        self._kind = t[0] if arg.numeric else t
        self._size = int(t[1:]) // 8 if arg.numeric else 8
        self._signed = t[0] == "s"
        self._loc = arg.node

    def value(self, regs: dict, read: Callable[[int, int], bytes], ctx) -> object:
        node = self._loc
        kind = self._kind
        try:
            if kind == "string":
                if node == ("comm",):
                    return ctx.comm()
                address = (_address(node, regs, read, ctx) if node[0] in _AT
                           else _eval(node, regs, read, ctx))
                if address is None:
                    return None
                return ctx.string(address)
            raw = (_eval(node, regs, read, ctx) if node[0] not in _MEMORY or kind == "symbol"
                   else _load(read, _address(node, regs, read, ctx), self._size))
            if raw is None:
                return None
            if kind == "symbol":
                return ctx.describe(raw)
            raw &= (1 << (8 * self._size)) - 1
            if self._signed and raw >> (8 * self._size - 1):
                raw -= 1 << (8 * self._size)
            return raw
        except (OSError, ValueError, KeyError, OverflowError, TypeError, StepperError):
            return None   # unreadable memory, or an object whose symbols cannot be read


def compile_fetch(arg: FetchArg) -> Callable[[dict, Callable, object], object]:
    """`fn(regs, read, ctx)` for `arg`: the common shapes (a register as a number, a string
    at a register or at +OFFS(register)) as closures of their own, the rest through
    Fetcher.value. Same results, fewer steps on the hot path."""
    node, t = arg.node, arg.type
    if node[0] == "reg" and arg.numeric:
        reg, bits = node[1], int(t[1:])
        if bits == 64 and t[0] != "s":
            return lambda regs, read, ctx: regs[reg]
        mask, sign = (1 << bits) - 1, 1 << (bits - 1)
        if t[0] == "s":
            return lambda regs, read, ctx: ((regs[reg] & mask) ^ sign) - sign
        return lambda regs, read, ctx: regs[reg] & mask
    if t == "string" and (node[0] == "reg" or node[0] == "deref" and node[2][0] == "reg"):
        reg, off = (node[1], 0) if node[0] == "reg" else (node[2][1], node[1])

        return lambda regs, read, ctx: ctx.string(regs[reg] + off)
    return Fetcher(arg).value


def compile_raw(arg: FetchArg) -> Callable[[Any, HitContext], object] | None:
    """`fn(buf, ctx)` for the shapes that need no Hit: a register (or `$argN` of the first
    six) as a number, and a string at a register or at +OFFS(register), read from the
    thread's own register buffer (a kernel.RegsBuffer, valid while the thread is stopped).
    None for every other shape: those go through a Hit (compile_fetch). The same values
    as compile_fetch gives (tests/stepper/test_fetching.py compares them)."""
    node, t = arg.node, arg.type
    if node == ("comm",):
        return lambda buf, ctx: ctx.comm()
    if node[0] == "arg" and node[1] <= len(ARG_REGS):
        node = ("reg", ARG_REGS[node[1] - 1])
    if node[0] == "deref" and node[2][0] == "reg" and t == "string":
        index, off = kernel.REG_INDEX.get(node[2][1]), node[1]
    elif node[0] == "reg":
        index, off = kernel.REG_INDEX.get(node[1]), 0
    else:
        return None
    if index is None:
        return None
    if t == "string":
        return lambda buf, ctx: ctx.string(buf[index] + off)
    if not arg.numeric:
        return None
    bits = int(t[1:])
    if bits == 64 and t[0] != "s":
        return lambda buf, ctx: buf[index]
    mask, sign = (1 << bits) - 1, 1 << (bits - 1)
    if t[0] == "s":
        return lambda buf, ctx: ((buf[index] & mask) ^ sign) - sign
    return lambda buf, ctx: buf[index] & mask


_MEMORY = ("deref", "addr", "sym", "stack")
_AT = ("deref", "addr", "sym")   # as strings: the string AT their address (the kernel rule)


def _load(read, address: int | None, size: int = 8) -> int | None:
    """`size` bytes at `address` (exactly those: a u8 at the last byte of a mapping reads)."""
    if address is None or address < 0 or address >> 64:
        return None
    data = read(address, size)
    if len(data) != size:
        return None
    return int.from_bytes(data, "little")


def _address(node: tuple, regs: dict, read, ctx) -> int | None:
    """Where a memory node loads from."""
    op = node[0]
    if op == "addr":
        return node[1]
    if op == "stack":
        return regs["rsp"] + 8 * node[1]
    if op == "sym":
        base = ctx.symbol_address(node[1])
        return None if base is None else base + node[2]
    inner = _eval(node[2], regs, read, ctx)
    return None if inner is None else inner + node[1]


def _eval(node: tuple, regs: dict, read, ctx) -> int | None:
    op = node[0]
    if op == "reg":
        return regs[node[1]]
    if op == "arg":
        n = node[1]
        if n <= 6:
            return regs[ARG_REGS[n - 1]]
        return _load(read, regs["rsp"] + 8 * (n - 6))   # [rsp] is the return address
    if op == "usdt":   # a USDT probe's own argument: sized and signed as its note says
        return node[1].read(regs, read, ctx.symbol_address)
    if op == "dwarf":  # a parameter by name: its DWARF location at the site
        from . import dwarf_params   # loaded by the check that made this node (fetch_sites)
        return dwarf_params.read_value(node[1], node[2], node[3], regs, read, node[4])
    if op == "sp":
        return regs["rsp"]
    if op == "retval":
        return ctx.retval
    if op in _MEMORY:
        return _load(read, _address(node, regs, read, ctx))
    return None   # $comm as a number: refused at parse time; "unbound": a site refused
