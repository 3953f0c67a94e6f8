"""The host CPU as emu's flags oracle: the flags the SDM leaves undefined, computed by the CPU.

A probed program can read every rflags bit (`pushf`), the undefined ones included, and a real
CPU computes those deterministically, per vendor and model (on this project's AMD EPYC, ~25%
of random mul/imul/shift/rotate/bt cases differ from emu's QEMU-like model). The tracer runs
on the very CPU its tracee runs on, so it asks it: for each operation of
`emu.flag_oracle.OPERATIONS` and operand width, a tiny function (copied once per process into
an anonymous mapping that is made read+execute only after it is written) loads the two
operands into rax and rcx, the six status flags of the thread's rflags into the CPU's, runs the
instruction in its register form, and stores the resulting rflags. A call through ctypes costs
about a microsecond (docs/flags.md has the measurements).

The stubs ship prebuilt in stepper/host_flags_stubs.py, so stepping needs no assembler (the
`fuzz` extra is not installed with the library). That table is generated with keystone by

    python -m stepper.host_flags_build

after any change to PROLOGUE, EPILOGUE or `instruction_text`, or to the forms of
emu.flag_oracle.OPERATIONS; a test checks that the shipped table is what the generator makes.

Only the status flags are loaded: TF would trap the tracer itself, AC would make its own
misaligned accesses fault, DF must be clear across a C call; none of them enters the ALU's
flag computation. The tracer's own flags are saved and restored around the instruction.

If the mapping cannot be made executable (a hardened kernel or policy refusing PROT_EXEC on
anonymous memory) or the table lacks a form, `operation` raises emu.Unsupported: the
instruction is then not emulated on live threads, and `auto` runs it on the CPU out of line.
"""

from __future__ import annotations

import ctypes
import mmap
import threading

from emu import Unsupported
from emu.flag_oracle import FlagsFunction

STATUS = 0x8D5  # CF PF AF ZF SF OF
KEEP = ~STATUS & ((1 << 64) - 1)
_REG = {8: ("al", "cl"), 16: ("ax", "cx"), 32: ("eax", "ecx"), 64: ("rax", "rcx")}

# The frame around one instruction. rdi points at u64[4]: a, b, rflags in, rflags out.
PROLOGUE = ("pushfq; mov rax, qword ptr [rdi]; mov rcx, qword ptr [rdi + 8]; "
             "mov rdx, qword ptr [rdi + 16]; and rdx, 0x8d5; pushfq; pop r8; "
             "and r8, 0xfffffffffffff72a; or r8, rdx; push r8; popfq; ")
EPILOGUE = "; pushfq; pop qword ptr [rdi + 24]; popfq; ret"


def instruction_text(name: str, bits: int) -> str:
    """The register form run for operation `name` on `bits`-wide operands (a in rax, b in rcx)."""
    a, b = _REG[bits]
    if name in ("mul", "imul1"):
        return f"{name[:4]} {b}"
    if name == "imul2":
        return f"imul {a}, {b}"
    if name in ("shl", "shr", "sar", "rol", "ror"):
        return f"{name} {a}, cl"
    return f"{name} {a}, {b}"  # bt*, and, or, xor, test


class HostFlags:
    """emu.flag_oracle.FlagsOracle answered by this CPU. One per process (`get()`)."""

    def __init__(self) -> None:
        self._functions: dict[tuple[str, int], FlagsFunction] = {}
        self._error: str | None = None
        self._memory: mmap.mmap | None = None
        try:
            self._build()
        except (OSError, ValueError) as e:
            self._error = str(e) or type(e).__name__

    @property
    def error(self) -> str | None:
        """Why the CPU cannot be asked (None: it can)."""
        return self._error

    def operation(self, name: str, bits: int) -> FlagsFunction:
        function = self._functions.get((name, bits))
        if function is not None:
            return function
        if self._error is not None:
            raise Unsupported(f"its undefined flags must be the host CPU's, which cannot be "
                              f"asked here ({self._error})")
        raise Unsupported(f"no host-CPU flags function for {name} on {bits}-bit operands")

    def _build(self) -> None:
        from .host_flags_stubs import STUBS

        code, offsets = bytearray(), []
        for stub in STUBS.values():
            offsets.append(len(code))
            code += stub
            code += b"\xcc" * (-len(code) % 16)
        size = -(-len(code) // mmap.PAGESIZE) * mmap.PAGESIZE
        memory = mmap.mmap(-1, size, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        memory.write(bytes(code))
        base = ctypes.addressof(ctypes.c_char.from_buffer(memory))
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        if libc.mprotect(base, size, mmap.PROT_READ | mmap.PROT_EXEC) != 0:
            raise OSError(ctypes.get_errno(), "mprotect(PROT_EXEC) refused")
        self._memory = memory  # kept alive: the functions point into it
        # PYFUNCTYPE: the call keeps the GIL (no release and re-take: cheaper, and the one
        # shared operand block cannot be used by two Python threads at once).
        prototype = ctypes.PYFUNCTYPE(None, ctypes.c_void_p)
        for (name, bits), offset in zip(STUBS, offsets):
            self._functions[name, bits] = _caller(prototype(base + offset))


_block = (ctypes.c_uint64 * 4)()  # a, b, rflags in, rflags out
_block_address = ctypes.addressof(_block)


def _caller(stub) -> FlagsFunction:
    """fn(a, b, rflags) -> rflags with the CPU's status flags, over the preallocated block."""
    def flags(a: int, b: int, rflags: int) -> int:
        block = _block
        block[0] = a
        block[1] = b
        block[2] = rflags
        stub(_block_address)
        return (rflags & KEEP) | (block[3] & STATUS)
    return flags


_host: HostFlags | None = None
_lock = threading.Lock()


def get() -> HostFlags:
    """The process's HostFlags, built on first use (one mmap and mprotect)."""
    global _host
    if _host is None:
        with _lock:
            if _host is None:
                _host = HostFlags()
    return _host
