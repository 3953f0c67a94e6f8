"""The execute-out-of-line area: one read+execute mapping in the tracee, one slot per thread.

Why it looks like this:
- It is mapped by making the tracee itself call mmap: a stopped thread's registers are saved,
  its rip pointed at a `syscall` instruction that already exists in executable memory (the
  bytes 0f 05 anywhere in the vDSO or ld.so: the CPU decodes from wherever rip points), one
  single-step runs the syscall, and every register is restored. Nothing is written to the
  program's memory for it and nothing touches the stack, so the red zone below rsp is safe and
  other threads can never run into a temporarily planted instruction.
- PROT_READ|PROT_EXEC only. Stepper writes slots through /proc/PID/mem, which ignores page
  protections; the program can never write the area, so probing never weakens W^X.
- Placement: just below the main executable's lowest mapping, with a gap. That is within
  ±2 GiB of the executable's code (so RIP-relative displacements can be re-encoded), it is
  not where brk grows (above the executable) nor where mmap hands out memory (top-down, far
  above), and MAP_FIXED_NOREPLACE guarantees it overlaps nothing already there.
- Slots: a thread keeps its slot for its lifetime, so threads never share one.
"""

from __future__ import annotations

import os
import signal

from . import maps, procfs, kernel
from .errors import StepperError

SYS_MMAP = 9
SYS_MUNMAP = 11
PROT_READ_EXEC = 0x1 | 0x4
MAP_PRIVATE_ANON_NOREPLACE = 0x02 | 0x20 | 0x100000
AREA_SIZE = 64 * 1024
GAP = 1 << 20

_ARG_REGS = ("rdi", "rsi", "rdx", "r10", "r8", "r9")


def find_syscall_gadget(pid: int, mem: kernel.ProcMem) -> int | None:
    """Address of bytes 0f 05 in an executable mapping the program does not own (vDSO first,
    then the dynamic loader, then any executable file mapping)."""
    mappings = [m for m in maps.read(pid) if m.executable and m.readable]
    order = sorted(mappings, key=lambda m: (m.path != "[vdso]", "ld-linux" not in m.path))
    for m in order:
        if m.path == "[vsyscall]":
            continue
        try:
            data = mem.read(m.start, min(m.end - m.start, 1 << 20))
        except OSError:
            continue
        i = data.find(b"\x0f\x05")
        if i >= 0:
            return m.start + i
    return None


def syscall_registers(tid: int, gadget: int, nr: int, args) -> tuple:
    """Set stopped thread `tid` up to run syscall `nr` with `args` at the `syscall`
    instruction `gadget`. Returns (saved, work): its registers as they were, to put back
    afterwards, and the buffer it now runs with (reusable to read the result)."""
    saved = kernel.new_regs()
    kernel.getregs(tid, saved)
    work = kernel.new_regs()
    work[:] = saved[:]
    work[kernel.RIP] = gadget
    work[kernel.RAX] = nr
    work[kernel.ORIG_RAX] = (1 << 64) - 1  # not in a syscall: no restart logic
    for name, value in zip(_ARG_REGS, args):
        work[kernel.REG_INDEX[name]] = value & ((1 << 64) - 1)
    kernel.setregs(tid, work)
    return saved, work


def inject_syscall(tid: int, mem: kernel.ProcMem, gadget: int, nr: int,
                   *args: int) -> int:
    """Run syscall `nr` in stopped thread `tid` and return its raw result; every register is
    restored afterwards. A signal that arrives meanwhile is queued to the thread again with
    tgkill, so none is lost."""
    saved, work = syscall_registers(tid, gadget, nr, args)
    pending = []
    try:
        while True:
            kernel.singlestep(tid)
            _, status = os.waitpid(tid, kernel.WALL)
            if not os.WIFSTOPPED(status):
                raise StepperError(f"thread {tid} ended while stepper mapped its XOL area")
            kernel.getregs(tid, work)
            if work[kernel.RIP] != gadget:
                break
            if os.WSTOPSIG(status) != signal.SIGTRAP:
                pending.append(os.WSTOPSIG(status))
        if os.WSTOPSIG(status) != signal.SIGTRAP:
            pending.append(os.WSTOPSIG(status))
        result = work[kernel.RAX]
    finally:
        kernel.setregs(tid, saved)
    for sig in pending:
        kernel.tgkill(procfs.tgid_of(tid), tid, sig)
    return result


def _is_error(result: int) -> bool:
    return result >= (1 << 64) - 4095


class XolArea:
    """The area of one traced process: mapped on first need, slots handed to threads."""

    def __init__(self, pid: int, exe: str, mem: kernel.ProcMem,
                 slot_size: int = 64, near: int | None = None) -> None:
        self.pid = pid
        self.exe = exe
        self.near = near  # place the area by the object mapped at `near` (boost)
        self.mem = mem
        self.slot_size = slot_size
        self.address: int | None = None
        self._gadget: int | None = None
        self._free: list[int] = []
        self._owner: dict[int, int] = {}  # tid -> slot address
        self._slot_code: dict[int, bytes] = {}  # slot address -> bytes written there

    @property
    def mapped(self) -> bool:
        return self.address is not None

    def _hint(self) -> int:
        mine = self._near_mappings() or maps.of_file(maps.read(self.pid), self.exe) or [
            m for m in maps.read(self.pid) if m.executable and m.is_file]
        low = min(m.start for m in mine)
        return max((low - GAP - AREA_SIZE) & ~0xFFF, 0x10000)

    def map(self, tid: int) -> int:
        """Map the area using stopped thread `tid`; returns its address."""
        if self.address is not None:
            return self.address
        self._gadget = find_syscall_gadget(self.pid, self.mem)
        if self._gadget is None:
            raise StepperError("no syscall instruction found to map the XOL area with")
        hint = self._hint()
        for attempt in range(16):
            address = hint - attempt * (AREA_SIZE + GAP)
            if address < 0x10000:
                break
            result = inject_syscall(tid, self.mem, self._gadget, SYS_MMAP, address,
                                    AREA_SIZE, PROT_READ_EXEC, MAP_PRIVATE_ANON_NOREPLACE,
                                    (1 << 64) - 1, 0)
            if not _is_error(result):
                self.address = result
                count = AREA_SIZE // self.slot_size
                self._free = [result + i * self.slot_size for i in reversed(range(count))]
                return result
        raise StepperError("could not map the XOL area near the program's code")

    def _near_mappings(self) -> list:
        """The mappings of the object at `near` (all of one file, or the anonymous mapping
        itself): the area goes below them, within ±2 GiB of that object's code."""
        if self.near is None:
            return []
        mappings = maps.read(self.pid)
        at = maps.find(mappings, self.near)
        if at is None:
            return []
        return (maps.of_file(mappings, at.path) if at.is_file else []) or [at]

    def reserve(self) -> int:
        """A slot taken for good (a boosted probe's slot, shared by every thread)."""
        if not self._free:
            raise StepperError("XOL area full: too many boosted probes near this code")
        return self._free.pop()

    def unreserve(self, slot: int) -> None:
        """Give back a reserved slot that was never written."""
        self._free.append(slot)

    def slot(self, tid: int) -> int:
        """The slot owned by thread `tid` (allocated on its first XOL step)."""
        slot = self._owner.get(tid)
        if slot is None:
            if not self._free:
                raise StepperError("XOL area full: too many threads stepping out of line")
            slot = self._free.pop()
            self._owner[tid] = slot
        return slot

    def release(self, tid: int) -> None:
        """Give back the slot of a thread that exited."""
        slot = self._owner.pop(tid, None)
        if slot is not None:
            self._free.append(slot)

    def load(self, slot: int, code: bytes) -> None:
        """Put `code` in `slot` unless it is already there (through /proc/PID/mem)."""
        if self._slot_code.get(slot) != code:
            if len(code) > self.slot_size:
                raise StepperError(f"XOL code of {len(code)} bytes exceeds a slot")
            self.mem.write(slot, code)
            self._slot_code[slot] = code

    def inherited(self, pid: int, mem: kernel.ProcMem) -> "XolArea":
        """The area as forked child `pid` has it: the same address and contents (fork copied
        them), every slot free except reserved ones (the parent's threads are not its)."""
        import copy

        child = copy.copy(self)
        child.pid, child.mem = pid, mem
        child._free = self._free + list(self._owner.values())
        child._owner = {}
        child._slot_code = dict(self._slot_code)
        return child

    def unmap(self, tid: int) -> None:
        """Remove the area using stopped thread `tid` (no thread may be inside it)."""
        if self.address is None or self._gadget is None:
            return
        inject_syscall(tid, self.mem, self._gadget, SYS_MUNMAP, self.address, AREA_SIZE)
        self.address = None
