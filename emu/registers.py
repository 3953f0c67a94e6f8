"""Capstone register ids mapped to the 64-bit register that holds them.

Every general register operand is a (key, size, shift) view of one 64-bit register:
`al` is (rax, 1, 0), `ah` is (rax, 1, 8), `eax` is (rax, 4, 0). Writes follow the
architecture: a 32-bit write zero-extends to 64 bits, 8- and 16-bit writes merge.
"""

from __future__ import annotations

from capstone import x86_const as X

M64 = (1 << 64) - 1

_FAMILIES = {
    "rax": ("eax", "ax", "al", "ah"), "rbx": ("ebx", "bx", "bl", "bh"),
    "rcx": ("ecx", "cx", "cl", "ch"), "rdx": ("edx", "dx", "dl", "dh"),
    "rsi": ("esi", "si", "sil", None), "rdi": ("edi", "di", "dil", None),
    "rbp": ("ebp", "bp", "bpl", None), "rsp": ("esp", "sp", "spl", None),
    **{f"r{n}": (f"r{n}d", f"r{n}w", f"r{n}b", None) for n in range(8, 16)},
}


def _build() -> dict[int, tuple[str, int, int]]:
    table: dict[int, tuple[str, int, int]] = {}
    for full, (r32, r16, r8, r8h) in _FAMILIES.items():
        for name, size, shift in ((full, 8, 0), (r32, 4, 0), (r16, 2, 0), (r8, 1, 0), (r8h, 1, 8)):
            if name is not None:
                table[getattr(X, f"X86_REG_{name.upper()}")] = (full, size, shift)
    table[X.X86_REG_RIP] = ("rip", 8, 0)
    table[X.X86_REG_EIP] = ("rip", 4, 0)
    return table


#: capstone register id -> (64-bit register name, size in bytes, bit shift)
GPR = _build()

#: capstone register id -> name of the 128-bit SSE register (held as an unsigned int)
XMM = {getattr(X, f"X86_REG_XMM{n}"): f"xmm{n}" for n in range(16)}

SEGMENT_BASES = {X.X86_REG_FS: "fs_base", X.X86_REG_GS: "gs_base"}
#: Segments whose base is zero in 64-bit mode; an override naming them changes nothing.
FLAT_SEGMENTS = {X.X86_REG_INVALID, X.X86_REG_CS, X.X86_REG_DS, X.X86_REG_ES, X.X86_REG_SS}
