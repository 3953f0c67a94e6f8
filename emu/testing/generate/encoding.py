"""Encodings from an independent assembler (keystone, GNU as for what keystone cannot encode),
each decoded back with capstone and checked operand by operand against what was asked for.
"""

from __future__ import annotations

import functools
import os
import subprocess
import tempfile

import capstone
from capstone import x86_const as X

from .machine import M64
from .operand_specs import Imm, Mem, Reg, Spec, Target


# ---------------------------------------------------------------- encoding

_ks = None


def _keystone():
    global _ks
    if _ks is None:
        import keystone
        _ks = keystone.Ks(keystone.KS_ARCH_X86, keystone.KS_MODE_64)
    return _ks


@functools.lru_cache(maxsize=65536)
def encode(text: str, address: int) -> bytes | None:
    """Keystone's encoding of `text` at `address`, or None when keystone refuses it."""
    import keystone
    try:
        encoding, _ = _keystone().asm(text, address)
    except keystone.KsError:
        return None
    return bytes(encoding) if encoding else None


@functools.lru_cache(maxsize=4)
def _gas_batch(texts: tuple[str, ...]) -> dict[str, bytes]:
    """Assemble `texts` with GNU as in one run, each line in its own section (read back with
    pyelftools). Used for what keystone cannot encode: endbr64 and the canonical 0F 1F nops."""
    from elftools.elf.elffile import ELFFile
    source = [".intel_syntax noprefix"]
    for i, text in enumerate(texts):
        source += [f'.section .t{i},"ax"', text]
    with tempfile.TemporaryDirectory() as tmp:
        src, obj = os.path.join(tmp, "a.s"), os.path.join(tmp, "a.o")
        with open(src, "w") as f:
            f.write("\n".join(source) + "\n")
        subprocess.run(["as", "--64", "-o", obj, src], check=True, capture_output=True)
        with open(obj, "rb") as f:
            elf = ELFFile(f)
            return {text: elf.get_section_by_name(f".t{i}").data() for i, text in enumerate(texts)}


#: Position-independent forms keystone cannot produce (or produces as a different opcode).
GAS_TEXTS = (
    "endbr64", "nop", "xchg ax, ax", "nop eax", "nop ax", "nop rax",
    "nop DWORD PTR [rax]", "nop DWORD PTR [rax+0x0]", "nop DWORD PTR [rax+rax*1+0x0]",
    "nop WORD PTR [rax+rax*1+0x0]", "nop DWORD PTR [rax+0x0]",
    "nop DWORD PTR [r8+rcx*8+0x12345678]", "nop QWORD PTR fs:[rbx]", "nop DWORD PTR [rip+0x100]",
) + tuple(f".nops {n}" for n in range(2, 12))


#: SSE forms keystone never picks: `movq xmm, r/m64` and `movq r/m64, xmm` with a memory operand
#: (66 REX.W 0F 6E / 7E; keystone encodes `movq xmm, m64` as F3 0F 7E and the store as 66 0F D6).
#: The memory operand is always [rax]; the sse_movd family aims rax.
GAS_SSE_TEXTS = tuple(
    text for n in (0, 7, 8, 15) for text in (
        f"rex.w movd xmm{n}, dword ptr [rax]", f"rex.w movd dword ptr [rax], xmm{n}"))


def gas_encodings() -> dict[str, bytes]:
    return {**_gas_batch(GAS_TEXTS), **_gas_sse()}


@functools.lru_cache(maxsize=1)
def _gas_sse() -> dict[str, bytes]:
    return _gas_batch(GAS_SSE_TEXTS)


# ---------------------------------------------------------------- checking an encoding

_md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
_md.detail = True
_ALIASES = {"sal": "shl", "movabs": "mov"}


def _norm(mnemonic: str) -> str:
    words = [w for w in mnemonic.split() if w not in ("lock", "rep", "repne", "repe", "notrack", "bnd")]
    m = words[-1] if words else ""
    return _ALIASES.get(m, m)


def matches(spec: Spec, code: bytes, address: int) -> bool:
    """Does capstone read back what was asked for? (Keystone is not trusted: see module doc.)"""
    insn = next(_md.disasm(code, address, 1), None)
    if insn is None or insn.size != len(code) or _norm(insn.mnemonic) != _norm(spec.mnemonic):
        return False
    if spec.lock != (X.X86_PREFIX_LOCK in insn.prefix):
        return False
    ops = insn.operands
    if len(ops) != len(spec.operands):
        return False
    want_regs = sorted(op.name for op in spec.operands if isinstance(op, Reg))
    got_regs = sorted(insn.reg_name(op.reg) for op in ops if op.type == X.X86_OP_REG)
    if want_regs != got_regs:
        return False
    for want, got in zip(spec.operands, ops):
        if isinstance(want, Imm):
            mask = (1 << (8 * want.size)) - 1
            if got.type != X.X86_OP_IMM or (got.imm & mask) != (want.value & mask):
                return False
        elif isinstance(want, Target):
            if got.type != X.X86_OP_IMM or (got.imm & M64) != want.address:
                return False
    mems = [op.mem for op in ops if op.type == X.X86_OP_MEM]  # by kind: xchg may swap order
    want_mems = [op for op in spec.operands if isinstance(op, Mem)]
    return len(mems) == len(want_mems) and all(
        _mem_matches(want, got, insn) for want, got in zip(want_mems, mems))


def _mem_matches(want: Mem, mem, insn) -> bool:
    name = lambda r: insn.reg_name(r) if r else None  # noqa: E731
    base = "rip" if want.rip else want.base
    seg = name(mem.segment)
    return (name(mem.base) == base and name(mem.index) == want.index
            and (mem.scale == want.scale or want.index is None)
            and (mem.disp & M64) == (want.disp & M64) and seg == want.seg)
