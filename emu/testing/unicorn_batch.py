"""A fixed list of 64-bit Unicorn registers moved in one C call each way.

Why not `Uc.reg_write_batch` / `Uc.reg_read_batch`, the binding's public batch calls: they
look up every register's ctypes class and build the value array on every call. Measured
with Unicorn 2.1.4 for the 20 registers a case or a stopped thread has (rip, rflags, the 16
general registers, fs and gs bases): about 40 us per public call against 1.3 us (write) and
2.2 us (read) for the C functions `uc_reg_write_batch` / `uc_reg_read_batch` called on
arrays built once (docs/fuzz.md). Over a fuzz case that is two thirds of the budget, so the
C calls stay; the binding has no public way to reach its library or an engine's handle, so
this module, and only this one, takes them from the binding's internals (`uclib`, `_uch`).
"""

from __future__ import annotations

import ctypes
from typing import Sequence


class RegisterBatch:
    """Registers `ids` of engine `uc`, as unsigned 64-bit values in `values` (a ctypes array
    of the same order)."""

    def __init__(self, uc, ids: Sequence[int]) -> None:
        from unicorn.unicorn_py3 import unicorn as binding  # no public handle: see above
        count = len(ids)
        self._lib, self._handle, self._count = binding.uclib, uc._uch, count
        self._ids = (ctypes.c_int * count)(*ids)
        self.values = (ctypes.c_uint64 * count)()
        base, size = ctypes.addressof(self.values), ctypes.sizeof(ctypes.c_uint64)
        self._ptrs = (ctypes.c_void_p * count)(*[base + i * size for i in range(count)])

    def store(self) -> None:
        """Engine registers <- `values`."""
        if self._lib.uc_reg_write_batch(self._handle, self._ids, self._ptrs, self._count):
            raise RuntimeError("uc_reg_write_batch failed")

    def load(self) -> None:
        """`values` <- engine registers."""
        if self._lib.uc_reg_read_batch(self._handle, self._ids, self._ptrs, self._count):
            raise RuntimeError("uc_reg_read_batch failed")

    def write(self, values: Sequence[int]) -> None:
        self.values[:] = values
        self.store()

    def read(self) -> list[int]:
        self.load()
        return self.values[:]
