"""Breakpoints: validated, decoded and given their step ops once, at insertion.

Insertion refuses, with a one-line StepperError and nothing written, an address that is not
in an executable mapping, one that is not an instruction boundary where that can be known (the
containing function symbol is decoded forward from its start), and an instruction no strategy
can step (see policy.choose). INT3 bytes go through /proc/PID/mem, which writes read-only
text without changing its protection.
"""

from __future__ import annotations

from typing import Callable

import emu

from . import located, maps, policy
from .boundary import Boundaries
from .errors import StepperError
from .kernel import ProcMem
from .records import Breakpoint

INT3 = b"\xcc"


class Breakpoints:
    """The breakpoints of one process, keyed by address."""

    def __init__(self, pid: int, mem: ProcMem) -> None:
        self.pid = pid
        self.mem = mem
        self.by_address: dict[int, Breakpoint] = {}
        self.boundaries = Boundaries()   # instruction starts of the functions probed so far

    def __iter__(self):
        return iter(self.by_address.values())

    def __len__(self) -> int:
        return len(self.by_address)

    def read_original(self, address: int, size: int) -> bytes:
        """Memory as the program wrote it: our INT3 bytes replaced by what they cover."""
        data = bytearray(self.mem.read(address, size))
        # Small reads (instructions) look up their few addresses: scanning every breakpoint
        # made inserting thousands of probes (one glob over libc) quadratic.
        candidates = ((self.by_address.get(a) for a in range(address, address + len(data)))
                      if len(data) < len(self.by_address) else self.by_address.values())
        for bp in candidates:
            if bp is not None and bp.inserted and address <= bp.address < address + len(data):
                data[bp.address - address] = bp.original[0]
        return bytes(data)

    def prepare(self, address: int, mode: str, callback: Callable | None = None) -> Breakpoint:
        """Validate `address`, decode its instruction and choose its ops; writes nothing."""
        if address in self.by_address:
            raise StepperError(f"a breakpoint is already set at {address:#x}")
        mappings = maps.read(self.pid)
        mapping = maps.find(mappings, address)
        if mapping is None or not mapping.executable:
            where = f"in {mapping.path or 'an anonymous mapping'} ({mapping.perms})" \
                if mapping else "in no mapping"
            raise StepperError(f"{address:#x} is not in an executable mapping of process "
                               f"{self.pid}: it is {where}")
        code = self.read_original(address, min(15, mapping.end - address))
        try:
            insn = emu.decode(code, address)
        except emu.DecodeError as e:
            raise StepperError(f"{address:#x}: {e}") from None
        symbol = located.containing_symbol(mappings, address)
        if symbol is not None:
            self._check_boundary(symbol, address, mapping.end)
        ops = policy.choose(mode, insn)
        return Breakpoint(address, insn, mode, ops, callback, symbol)

    def _check_boundary(self, symbol: located.Symbol, address: int, limit: int) -> None:
        """`address` must be where an instruction of `symbol` starts (stepper.boundary decodes
        each function once, from its start, however many probes it gets)."""
        def read(at: int, size: int) -> bytes:
            return self.read_original(at, max(0, min(size, limit - at)))
        try:
            insn = self.boundaries.straddling(symbol.address, address, read,
                                              key=(symbol.object, symbol.address))
        except emu.DecodeError:
            return  # data inside the function: the boundary cannot be known
        if insn is not None:
            raise StepperError(
                f"{address:#x} is not an instruction boundary: it is inside `{insn.text}` at "
                f"{insn.address:#x} ({symbol.name}+{insn.address - symbol.address:#x})")

    def insert(self, bp: Breakpoint) -> None:
        self.mem.write(bp.address, INT3)
        bp.inserted = True
        self.by_address[bp.address] = bp

    def hold_semaphore(self, bp: Breakpoint, address: int) -> None:
        """Count `bp` as one user of the USDT semaphore at `address` (a 16-bit counter the
        program reads, docs/usdt.md): +1 now, -1 when the breakpoint goes."""
        self._add_to_semaphore(address, 1)
        bp.semaphore = address

    def _add_to_semaphore(self, address: int, delta: int) -> None:
        value = int.from_bytes(self.mem.read(address, 2), "little")
        self.mem.write(address, max(0, min(0xFFFF, value + delta)).to_bytes(2, "little"))

    def remove(self, bp: Breakpoint) -> None:
        if bp.inserted:
            bp.inserted = False
            self.mem.write(bp.address, bp.original)
            if bp.semaphore is not None:
                self._add_to_semaphore(bp.semaphore, -1)
        self.by_address.pop(bp.address, None)

    def restore_all(self) -> None:
        """Put every original byte back (errors ignored: the process may be gone)."""
        for bp in list(self.by_address.values()):
            if bp.inserted:
                bp.inserted = False
                try:
                    self.mem.write(bp.address, bp.original)
                    if bp.semaphore is not None:
                        self._add_to_semaphore(bp.semaphore, -1)
                except (OSError, StepperError):  # short write: the memory is gone (exit, dlclose)
                    pass

