"""A stopped thread's registers as a debugger sees them: a mapping by name, readable and
writable, over the thread's own ptrace buffer.

Names: the 64-bit general registers, rip, rflags (also "eflags"), fs_base, gs_base, their
32/16/8-bit parts (eax, ax, al, ah, r8d, r8w, r8b, ...) and xmm0..xmm15 (ints, read from the
FXSAVE image on first use). A write changes the buffer only; whoever resumes the thread
writes it back with one SETREGS (and one SETFPREGS if an xmm register changed), so several
changes cost one system call. Writing a 32-bit name zero-extends into the 64-bit register,
as the CPU does; a 16- or 8-bit write keeps the other bits.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Iterator

import emu

from . import kernel
from .errors import StepperError

_XMM = {name: kernel.XMM_OFFSET + 16 * n for n, name in enumerate(emu.VECTOR_REGISTERS)}
_MASK64 = (1 << 64) - 1

#: part name -> (64-bit register, shift, width in bits, zero-extends)
_PARTS: dict[str, tuple[str, int, int, bool]] = {"eflags": ("rflags", 0, 64, False)}
for _r in ("a", "b", "c", "d"):
    _PARTS[f"e{_r}x"] = (f"r{_r}x", 0, 32, True)
    _PARTS[f"{_r}x"] = (f"r{_r}x", 0, 16, False)
    _PARTS[f"{_r}l"] = (f"r{_r}x", 0, 8, False)
    _PARTS[f"{_r}h"] = (f"r{_r}x", 8, 8, False)
for _r in ("si", "di", "bp", "sp"):
    _PARTS[f"e{_r}"] = (f"r{_r}", 0, 32, True)
    _PARTS[_r] = (f"r{_r}", 0, 16, False)
    _PARTS[f"{_r}l"] = (f"r{_r}", 0, 8, False)
for _n in range(8, 16):
    _PARTS[f"r{_n}d"] = (f"r{_n}", 0, 32, True)
    _PARTS[f"r{_n}w"] = (f"r{_n}", 0, 16, False)
    _PARTS[f"r{_n}b"] = (f"r{_n}", 0, 8, False)


class Registers(MutableMapping):
    """The registers of one stopped thread (see the module). `dirty`/`fp_dirty` say what
    must be written back before it runs; `fp` is the FXSAVE image once read."""

    def __init__(self, tid: int, buf) -> None:
        self.tid = tid
        self.buf = buf
        self.fp = None
        self.dirty = False
        self.fp_dirty = False

    def _fp(self):
        if self.fp is None:
            self.fp = kernel.FpregsBuffer()
            kernel.getfpregs(self.tid, self.fp)
        return self.fp

    def __getitem__(self, name: str) -> int:
        index = kernel.REG_INDEX.get(name)
        if index is not None:
            return self.buf[index]
        part = _PARTS.get(name)
        if part is not None:
            full, shift, width, _ = part
            return (self.buf[kernel.REG_INDEX[full]] >> shift) & ((1 << width) - 1)
        at = _XMM.get(name)
        if at is not None:
            return int.from_bytes(bytes(self._fp()[at:at + 16]), "little")
        raise KeyError(name)

    def __setitem__(self, name: str, value: int) -> None:
        if not isinstance(value, int):
            raise StepperError(f"register {name}: {value!r} is not an int")
        index = kernel.REG_INDEX.get(name)
        part = _PARTS.get(name)
        if index is None and part is not None:
            full, shift, width, zero_extend = part
            index = kernel.REG_INDEX[full]
            mask = ((1 << width) - 1) << shift
            old = 0 if zero_extend else self.buf[index] & ~mask
            value = old | ((value << shift) & mask)
        if index is not None:
            self.buf[index] = value & _MASK64
            self.dirty = True
            return
        at = _XMM.get(name)
        if at is None:
            raise StepperError(f"no register named {name!r}")
        self._fp()[at:at + 16] = (value & ((1 << 128) - 1)).to_bytes(16, "little")
        self.fp_dirty = True

    def __delitem__(self, name: str) -> None:
        raise StepperError("registers cannot be deleted")

    def __iter__(self) -> Iterator[str]:
        yield from kernel.REG_INDEX
        yield from emu.VECTOR_REGISTERS

    def __len__(self) -> int:
        return len(kernel.REG_INDEX) + len(emu.VECTOR_REGISTERS)

    def flush(self) -> None:
        """Write the changes back to the (stopped) thread."""
        if self.dirty:
            kernel.setregs(self.tid, self.buf)
            self.dirty = False
        if self.fp_dirty:
            kernel.setfpregs(self.tid, self.fp)
            self.fp_dirty = False
        self.fp = None
