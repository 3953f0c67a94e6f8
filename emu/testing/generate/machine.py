"""The machine a case runs on: register names, the memory layout whose base moves around, and
the Case record.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterable


from ...state import REGISTER_NAMES, VECTOR_REGISTERS, FlatState


M64 = (1 << 64) - 1
M128 = (1 << 128) - 1

PAGE = 0x1000

# ---------------------------------------------------------------- registers

R64 = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp") + tuple(f"r{n}" for n in range(8, 16))
R32 = ("eax", "ebx", "ecx", "edx", "esi", "edi", "ebp", "esp") + tuple(f"r{n}d" for n in range(8, 16))
R16 = ("ax", "bx", "cx", "dx", "si", "di", "bp", "sp") + tuple(f"r{n}w" for n in range(8, 16))
R8 = ("al", "bl", "cl", "dl", "sil", "dil", "bpl", "spl") + tuple(f"r{n}b" for n in range(8, 16))
HIGH8 = ("ah", "bh", "ch", "dh")
REGS = {1: R8 + HIGH8, 2: R16, 4: R32, 8: R64}
ACC = {1: "al", 2: "ax", 4: "eax", 8: "rax"}
#: registers that can only be encoded with a REX prefix, which excludes ah/bh/ch/dh
REX_ONLY = frozenset(R64[8:] + R32[8:] + R16[8:] + R8[4:])
PTR = {1: "byte", 2: "word", 4: "dword", 8: "qword", 16: "xmmword"}
XMM = VECTOR_REGISTERS
CONDITIONS = ("o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g")

# rflags bits a user program can set and that do not change how the oracle runs: TF is left
# out of the *initial* state because Unicorn would raise the single-step trap after the
# instruction; POPF may still set it (the trap then belongs to the next instruction).
CF, PF, AF, ZF, SF, TF, IF, DF, OF = 0x1, 0x4, 0x10, 0x40, 0x80, 0x100, 0x200, 0x400, 0x800
IOPL, NT, AC, ID = 0x3000, 0x4000, 0x40000, 0x200000
USER_FLAGS = (CF, PF, AF, ZF, SF, DF, OF, NT, AC, ID)

INTERESTING = (
    0, 1, 2, 3, 7, 8, 0x1F, 0x20, 0x3F, 0x40, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF,
    0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x100000000, 0x100000001, 0x7FFFFFFFFFFFFFFF,
    0x8000000000000000, 0x8000000000000001, M64, M64 - 1, 0xFFFFFFFF00000000, 0x00000000FFFFFFFE,
    0x5555555555555555, 0xAAAAAAAAAAAAAAAA, 0xFFFFFFFFFFFFFF80, 0xFFFFFFFFFFFF8000,
)

# ---------------------------------------------------------------- memory layout

#: (name, offset from the layout base, pages, writable). Gaps between regions are unmapped.
LAYOUT = (
    ("code", 0x0000, 1, False),
    ("data", 0x2000, 2, True),
    ("rodata", 0x5000, 1, False),
    ("stack", 0x7000, 2, True),
    ("fs", 0xA000, 1, True),
    ("gs", 0xC000, 1, True),
)
GAPS = (0x1000, 0x4000, 0x6000, 0x9000, 0xB000, 0xD000)
SPAN = 0xE000
REGION = {name: (offset, pages * PAGE, writable) for name, offset, pages, writable in LAYOUT}


#: RegionSpec.seed meaning "all zero bytes" (hand-made cases)
ZERO_FILL = -1


@dataclass(frozen=True)
class RegionSpec:
    """A mapped region described compactly: random contents from `seed`, then `patches`
    (absolute address, bytes) laid over them. Keeping contents as a seed keeps reproducers short."""

    start: int
    size: int
    writable: bool
    seed: int
    patches: tuple[tuple[int, bytes], ...] = ()
    name: str = ""

    def contents(self) -> bytes:
        if self.seed == ZERO_FILL:
            data = bytearray(self.size)
        else:
            data = bytearray(random.Random(self.seed).randbytes(self.size))
        for address, blob in self.patches:
            for i, b in enumerate(blob):
                offset = address + i - self.start
                if 0 <= offset < self.size:
                    data[offset] = b
        return bytes(data)


@dataclass(frozen=True)
class Case:
    """One differential case: `code` at `regs['rip']`, the registers, and the memory regions.

    `str(case)` is a reproducer: paste the `Case(...)` repr into a regression test.
    """

    family: str
    text: str
    code: bytes
    regs: tuple[tuple[str, int], ...]
    regions: tuple[RegionSpec, ...]

    @property
    def address(self) -> int:
        return dict(self.regs)["rip"]

    def state(self) -> FlatState:
        """A fresh FlatState for this case (the code is inside the read-only code region)."""
        state = FlatState(dict(self.regs))
        for region in self.regions:
            state.map(region.start, region.contents(), region.writable)
        return state

    def describe(self) -> str:
        lines = [f"family {self.family}: {self.text}", f"bytes {self.code.hex()} at {self.address:#x}"]
        lines += [f"  {name:7} = {value:#018x}" for name, value in self.regs]
        for r in self.regions:
            lines.append(f"  region {r.name or '?':6} {r.start:#x}..{r.start + r.size:#x} "
                         f"{'rw' if r.writable else 'ro'} seed={r.seed}"
                         + "".join(f" patch {a:#x}={b.hex()}" for a, b in r.patches))
        lines.append(f"reproducer: {self!r}")
        return "\n".join(lines)


def case_from(family: str, text: str, code: bytes, regs: dict[str, int],
              regions: Iterable[RegionSpec]) -> Case:
    """Build a Case from plain data (regression tests use this)."""
    full = {name: 0 for name in REGISTER_NAMES + XMM}
    full["rflags"] = 0x202
    full.update(regs)
    return Case(family, text, bytes(code),
                tuple((n, full[n] & (M128 if n in XMM else M64)) for n in REGISTER_NAMES + XMM),
                tuple(regions))
