"""A fixed list of Unicorn registers (64-bit, or the 128-bit xmm) moved in one C call each way.

Why not `Uc.reg_write_batch` / `Uc.reg_read_batch`, the binding's public batch calls: they
look up every register's ctypes class and build the value array on every call. Measured
with Unicorn 2.1.4 for the 20 registers a case or a stopped thread has (rip, rflags, the 16
general registers, fs and gs bases): about 40 us per public call against 1.3 us (write) and
2.2 us (read) for the C functions `uc_reg_write_batch` / `uc_reg_read_batch` called on
arrays built once (docs/fuzz.md). A whole fuzz case costs about 150 us, so the C calls stay;
the binding has no public way to reach its library or an engine's handle, so this module,
and only this one, takes them from the binding's internals (`uclib`, `_uch`).
"""

from __future__ import annotations

import ctypes
from typing import Sequence


M64 = (1 << 64) - 1


class RegisterBatch:
    """Registers `ids` of engine `uc`, all `width` bytes wide (8: general registers, 16: xmm),
    held in `values`, a ctypes array of 64-bit words in the same order (little-endian words
    for a 16-byte register, as Unicorn stores it)."""

    def __init__(self, uc, ids: Sequence[int], width: int = 8) -> None:
        from unicorn.unicorn_py3 import unicorn as binding  # no public handle: see above
        if width not in (8, 16):
            raise ValueError(f"register width {width}: 8 or 16 bytes")
        count = len(ids)
        self._lib, self._handle, self._count = binding.uclib, uc._uch, count
        self._wide = width == 16
        self._ids = (ctypes.c_int * count)(*ids)
        self.values = (ctypes.c_uint64 * (count * width // 8))()
        base = ctypes.addressof(self.values)
        self._ptrs = (ctypes.c_void_p * count)(*[base + i * width for i in range(count)])

    def store(self) -> None:
        """Engine registers <- `values`."""
        if self._lib.uc_reg_write_batch(self._handle, self._ids, self._ptrs, self._count):
            raise RuntimeError("uc_reg_write_batch failed")

    def load(self) -> None:
        """`values` <- engine registers."""
        if self._lib.uc_reg_read_batch(self._handle, self._ids, self._ptrs, self._count):
            raise RuntimeError("uc_reg_read_batch failed")

    def write(self, values: Sequence[int]) -> None:
        """Engine registers <- `values` (unsigned ints)."""
        self.values[:] = [w for v in values for w in (v & M64, v >> 64)] if self._wide else values
        self.store()

    def read(self) -> list[int]:
        """The engine registers, as unsigned ints."""
        self.load()
        words = self.values[:]
        if self._wide:
            return [lo | hi << 64 for lo, hi in zip(words[::2], words[1::2])]
        return words
