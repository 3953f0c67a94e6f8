"""The machine state the emulator runs against.

The emulator touches a thread only through this small protocol, so the same compiled plan
runs on a live traced thread (stepper.live) and on the in-memory FlatState used by tests.

Protocol (duck-typed, see `State`):
- ``regs``: a mutable mapping from register key to an unsigned 64-bit int. With the default
  keys those are the names in `REGISTER_NAMES`; `emu.compile` accepts another key mapping
  (for example indices into a ptrace register buffer) so a live state avoids building a dict.
- ``read(address, size) -> bytes`` and ``write(address, data)``, which raise
  `emu.MemoryFault(address, size, access)` where the access is not allowed. A failing write
  must write nothing.
"""

from __future__ import annotations

import bisect
from typing import MutableMapping, Protocol

from .errors import MemoryFault

GENERAL_REGISTERS = (
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
)
REGISTER_NAMES = GENERAL_REGISTERS + ("rip", "rflags", "fs_base", "gs_base")
#: The SSE registers, as unsigned 128-bit ints. Optional in the protocol: a state without
#: them (a compile with keys lacking them) simply does not emulate SSE instructions.
VECTOR_REGISTERS = tuple(f"xmm{n}" for n in range(16))


class State(Protocol):
    regs: MutableMapping

    def read(self, address: int, size: int) -> bytes: ...

    def write(self, address: int, data: bytes) -> None: ...


class _Region:
    __slots__ = ("start", "end", "data", "writable")

    def __init__(self, start: int, data: bytearray, writable: bool) -> None:
        self.start = start
        self.end = start + len(data)
        self.data = data
        self.writable = writable


class FlatState:
    """A reference State: registers (general and SSE) in a dict, memory as a few mapped regions.

    Any access that is not wholly inside one region faults, as does a write to a read-only
    region; adjacent regions are not merged, so a test can place a page boundary exactly.
    """

    def __init__(self, regs: dict[str, int] | None = None) -> None:
        self.regs: dict[str, int] = {name: 0 for name in REGISTER_NAMES + VECTOR_REGISTERS}
        self.regs["rflags"] = 0x202
        if regs:
            unknown = set(regs) - set(self.regs)
            if unknown:
                raise KeyError(f"unknown register(s): {', '.join(sorted(unknown))}")
            self.regs.update(regs)
        self._starts: list[int] = []
        self._regions: list[_Region] = []
        self._last = _Region(0, bytearray(), False)  # the region hit last: tried first

    def map(self, address: int, data: bytes, writable: bool = True) -> None:
        """Map `data` at `address`. Regions may not overlap."""
        region = _Region(address, bytearray(data), writable)
        i = bisect.bisect_right(self._starts, address)
        if (i and self._regions[i - 1].end > address) or (
            i < len(self._regions) and self._regions[i].start < region.end
        ):
            raise ValueError(f"region at {address:#x} overlaps an existing one")
        self._starts.insert(i, address)
        self._regions.insert(i, region)

    def regions(self) -> list[tuple[int, bytes, bool]]:
        """(address, contents, writable) of every region, in address order."""
        return [(r.start, bytes(r.data), r.writable) for r in self._regions]

    def _region(self, address: int, size: int, access: str) -> _Region:
        i = bisect.bisect_right(self._starts, address) - 1
        if i >= 0:
            region = self._regions[i]
            if address + size <= region.end:
                self._last = region
                return region
        raise MemoryFault(address, size, access)

    def read(self, address: int, size: int) -> bytes:
        region = self._last
        if not region.start <= address <= region.end - size:
            region = self._region(address, size, "read")
        offset = address - region.start
        return bytes(region.data[offset:offset + size])

    def write(self, address: int, data: bytes) -> None:
        region = self._last
        if not region.start <= address <= region.end - len(data):
            region = self._region(address, len(data), "write")
        if not region.writable:
            raise MemoryFault(address, len(data), "write")
        offset = address - region.start
        region.data[offset:offset + len(data)] = data

    def copy(self) -> "FlatState":
        """An independent copy: registers and every region."""
        other = FlatState.__new__(FlatState)  # no re-validation: this state is valid
        other.regs = dict(self.regs)
        other._starts = list(self._starts)
        other._regions = [_Region(r.start, bytearray(r.data), r.writable) for r in self._regions]
        other._last = _Region(0, bytearray(), False)
        return other
