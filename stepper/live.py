"""The emu State of one stopped, traced thread.

Registers: the thread's preallocated `user_regs_struct` buffer itself (read once per hit with
PTRACE_GETREGS); the emu plan is compiled with keys = indices into that buffer
(`kernel.REG_INDEX`), so a hit builds no dict. The caller writes the buffer back (one
PTRACE_SETREGS) only when something changed.

Memory: process_vm_readv/writev, which honour the tracee's page protections: an emulated
access that the CPU would fault on raises emu.MemoryFault here, and the caller lets the real
CPU take the genuine fault (XOL). A write that fails part-way is undone, so a failing write
leaves memory unchanged, as emu's State protocol requires.
"""

from __future__ import annotations

from emu import MemoryFault

from . import kernel

PAGE = 4096


class LiveState:
    """emu State protocol over a stopped thread: `regs` is its ptrace register buffer."""

    __slots__ = ("tid", "regs", "vm")

    def __init__(self, tid: int, regs, vm: kernel.VmAccess) -> None:
        self.tid = tid
        self.regs = regs
        self.vm = vm

    def read(self, address: int, size: int) -> bytes:
        data = self.vm.read(address, size)
        if data is None:
            raise MemoryFault(address, size, "read")
        return data

    def write(self, address: int, data: bytes) -> None:
        size = len(data)
        if (address & (PAGE - 1)) + size <= PAGE:
            # One page: the kernel writes all of it or none of it.
            if self.vm.write(address, data) != size:
                raise MemoryFault(address, size, "write")
            return
        self._write_across_pages(address, data)

    def _write_across_pages(self, address: int, data: bytes) -> None:
        """A write spanning pages may stop at a read-only page after the first: keep the old
        bytes and put back whatever part was written, so the fault changes nothing."""
        size = len(data)
        old = self.vm.read(address, size)
        if old is None:  # on x86 every writable page is readable: this write would fault
            raise MemoryFault(address, size, "write")
        done = self.vm.write(address, data)
        if done == size:
            return
        if done > 0:
            self.vm.write(address, old[:done])
        raise MemoryFault(address, size, "write")
