"""x86-64 hardware debug registers of a traced thread: set and clear watch slots, and read
which slot fired.

Why a module: watchpoints ("stop when this address is written") cost nothing while the
program runs only if the CPU checks the address itself. Linux lets a tracer program the
four address registers DR0-DR3 and the control register DR7 of a stopped tracee with
PTRACE_POKEUSER at offsetof(struct user, u_debugreg[i]) (the kernel turns them into ptrace
hardware-breakpoint perf events and validates them), and reports a hit as a SIGTRAP whose
DR6 (read with PTRACE_PEEKUSER) has bit i set for slot i. The registers are per thread and
a new thread starts with them clear: a caller watching a process sets them in every thread.
See docs/unwind.md ("Hardware debug registers") for the bit layout relied on.
"""

from __future__ import annotations

import errno
import os

from . import kernel
from .errors import StepperError

#: offsetof(struct user, u_debugreg) on x86-64 (sys/user.h): 8 bytes per register after it.
DEBUGREG_OFFSET = 848
SLOTS = 4
#: DR7 RW field: what access triggers the slot ("x" must have length 1: LEN bits 00).
ACCESS = {"x": 0b00, "w": 0b01, "rw": 0b11}
#: DR7 LEN field for 1, 2, 4 and 8 bytes (8 is 0b10: an x86-64 addition, hence the order).
LENGTH = {1: 0b00, 2: 0b01, 4: 0b11, 8: 0b10}
DR6_SINGLE_STEP = 1 << 14


class DebugRegisterError(StepperError):
    """A watch slot cannot be set: bad size, alignment or access, or the kernel refused
    (`errno`: the kernel's reason, 0 when refused before any call; ESRCH: thread gone)."""

    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno


def _offset(index: int) -> int:
    return DEBUGREG_OFFSET + 8 * index


def read(tid: int, index: int) -> int:
    """Debug register DR`index` (0-3, 6 or 7) of stopped thread `tid`."""
    try:
        return kernel.peekuser(tid, _offset(index))
    except kernel.PtraceFailed as e:
        raise DebugRegisterError(f"cannot read DR{index} of thread {tid}: "
                                 f"{os.strerror(e.errno)}", e.errno) from None


def write(tid: int, index: int, value: int) -> None:
    """Set debug register DR`index` of stopped thread `tid` (the kernel validates it)."""
    try:
        kernel.pokeuser(tid, _offset(index), value)
    except kernel.PtraceFailed as e:
        err = e.errno
        raise DebugRegisterError(f"cannot set DR{index} of thread {tid}: {os.strerror(err)}"
                                 + (" (this CPU or virtual machine may not offer hardware "
                                    "watchpoints)" if err in (errno.EIO, errno.ENOSPC) else ""),
                                 err) from None


def checked_size(size: int, access: str) -> int:
    """The length a slot watching with `access` covers ("x": always 1); a bad access or
    size is a DebugRegisterError."""
    if access not in ACCESS:
        raise DebugRegisterError(f"watch access {access!r} is not one of w, rw, x")
    if access == "x":
        size = 1
    if size not in LENGTH:
        raise DebugRegisterError(f"a hardware watchpoint covers 1, 2, 4 or 8 bytes, not {size}")
    return size


def control_bits(slot: int, size: int, access: str) -> tuple[int, int]:
    """(bits to set, mask of the slot's bits) in DR7 for a local enable of `slot`."""
    if not 0 <= slot < SLOTS:
        raise DebugRegisterError(f"debug register slot {slot} does not exist: use 0 to 3")
    size = checked_size(size, access)
    shift = 16 + 4 * slot
    bits = (1 << (2 * slot)) | (ACCESS[access] << shift) | (LENGTH[size] << (shift + 2))
    mask = (0b11 << (2 * slot)) | (0b1111 << shift)
    return bits, mask


def set_slot(tid: int, slot: int, address: int, size: int = 8, access: str = "w") -> None:
    """Watch [address, address+size) in thread `tid` with `slot`: "w" traps after a write,
    "rw" after a read or write, "x" before executing `address` (size 1). The address must
    be aligned to the size, as the CPU compares it with the low bits masked."""
    bits, mask = control_bits(slot, size, access)
    length = 1 if access == "x" else size
    if address % length:
        raise DebugRegisterError(f"a {length}-byte watchpoint needs an address aligned to "
                                 f"{length}, not {address:#x}")
    write(tid, slot, address)
    write(tid, 7, (read(tid, 7) & ~mask) | bits)


def clear_slot(tid: int, slot: int) -> None:
    """Disable `slot` in thread `tid` (its address register is zeroed after DR7)."""
    _bits, mask = control_bits(slot, 1, "w")
    write(tid, 7, read(tid, 7) & ~mask)
    write(tid, slot, 0)


def fired(tid: int, clear: bool = True) -> list[int]:
    """The slots whose condition was met at the SIGTRAP thread `tid` stopped with (from DR6);
    DR6 is cleared afterwards unless `clear` is False, since the CPU never clears it."""
    status = read(tid, 6)
    if clear:
        write(tid, 6, 0)
    return [slot for slot in range(SLOTS) if status >> slot & 1]
