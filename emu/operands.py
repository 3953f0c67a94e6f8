"""Operands compiled once into small closures: effective address, load, store.

Every family handler works on these, so the rules live in one place: a 32-bit register write
zero-extends to 64 bits, 8- and 16-bit writes merge, immediates arrive sign-extended to the
operand size, RIP-relative addresses are constants (the instruction's address is fixed),
`fs:`/`gs:` add the segment base, and a 0x67 prefix computes the address in 32 bits.

Getters take (regs, state) and return an unsigned int of the operand's size; setters take
(regs, state, value). A memory setter writes memory only, so a handler that stores its memory
result before it touches any register leaves the state untouched when the store faults.
"""

from __future__ import annotations

from typing import Callable, Mapping

from capstone import x86_const as X

from .errors import Unsupported
from .registers import FLAT_SEGMENTS, GPR, M64, SEGMENT_BASES, XMM

M32 = 0xFFFFFFFF
Getter = Callable[[object, object], int]
Setter = Callable[[object, object, int], None]
AddressFn = Callable[[object], int]


class Operand:
    """One operand of one instruction, compiled for a given register-key mapping."""

    __slots__ = ("kind", "size", "bits", "mask", "get", "put", "address", "key", "value")

    def __init__(self, kind: str, size: int) -> None:
        self.kind = kind
        self.size = size
        self.bits = size * 8
        self.mask = (1 << self.bits) - 1
        self.key = None  # register key (reg operands)
        self.value = 0  # immediate value (imm operands)
        self.address: AddressFn | None = None  # effective address (mem operands)


def register(capstone_reg: int, keys: Mapping[str, object]) -> tuple[object, int, int]:
    """(key, size, shift) of a general-register operand, or Unsupported."""
    try:
        name, size, shift = GPR[capstone_reg]
    except KeyError:
        raise Unsupported("operand is not a general-purpose register") from None
    return _key(keys, name), size, shift


def _key(keys: Mapping[str, object], name: str) -> object:
    try:
        return keys[name]
    except KeyError:
        raise Unsupported(f"register {name} is not available in this state") from None


def _xmm_operand(capstone_reg: int, keys: Mapping[str, object]) -> Operand:
    op = Operand("xmm", 16)
    key = op.key = _key(keys, XMM[capstone_reg])
    op.get = lambda r, s: r[key]

    def put(r, s, v):
        r[key] = v
    op.put = put
    return op


def _reg_operand(capstone_reg: int, keys: Mapping[str, object]) -> Operand:
    if capstone_reg in XMM:
        return _xmm_operand(capstone_reg, keys)
    key, size, shift = register(capstone_reg, keys)
    op = Operand("reg", size)
    op.key = key
    mask = op.mask
    if size == 8:
        op.get = lambda r, s: r[key]

        def put(r, s, v):
            r[key] = v
    elif size == 4:
        op.get = lambda r, s: r[key] & M32

        def put(r, s, v):
            r[key] = v  # a 32-bit write zero-extends into the full register
    else:
        hole = M64 ^ (mask << shift)
        if shift:
            op.get = lambda r, s: (r[key] >> shift) & mask
        else:
            op.get = lambda r, s: r[key] & mask

        def put(r, s, v):
            r[key] = (r[key] & hole) | (v << shift)
    op.put = put
    return op


def effective_address(mem, next_ip: int, keys: Mapping[str, object], addr32: bool) -> AddressFn:
    """A closure computing the linear address of a capstone memory operand."""
    disp = mem.disp
    seg_key = None
    if mem.segment in SEGMENT_BASES:
        seg_key = _key(keys, SEGMENT_BASES[mem.segment])
    elif mem.segment not in FLAT_SEGMENTS:
        raise Unsupported("unknown segment override")
    wrap = M32 if addr32 else M64
    if mem.base in (X.X86_REG_RIP, X.X86_REG_EIP):
        if mem.index != X.X86_REG_INVALID:
            raise Unsupported("RIP-relative operand with an index")
        const = (next_ip + disp) & wrap
        if seg_key is None:
            return lambda r: const
        return lambda r: (r[seg_key] + const) & M64
    base = register(mem.base, keys)[0] if mem.base != X.X86_REG_INVALID else None
    index = register(mem.index, keys)[0] if mem.index != X.X86_REG_INVALID else None
    scale = mem.scale
    disp &= wrap
    if addr32:
        def ea32(r):
            a = disp
            if base is not None:
                a += r[base] & M32
            if index is not None:
                a += (r[index] & M32) * scale
            return a & M32
        core = ea32
    elif index is None and base is not None:
        core = lambda r: (r[base] + disp) & M64
    elif index is not None and base is not None:
        core = lambda r: (r[base] + r[index] * scale + disp) & M64
    elif index is not None:
        core = lambda r: (r[index] * scale + disp) & M64
    else:
        core = lambda r: disp
    if seg_key is None:
        return core
    return lambda r: (r[seg_key] + core(r)) & M64


def _mem_operand(cs_op, size: int, next_ip: int, keys, addr32: bool) -> Operand:
    op = Operand("mem", size)
    ea = op.address = effective_address(cs_op.mem, next_ip, keys, addr32)
    from_bytes = int.from_bytes
    op.get = lambda r, s: from_bytes(s.read(ea(r), size), "little")

    def put(r, s, v):
        s.write(ea(r), v.to_bytes(size, "little"))
    op.put = put
    return op


def _imm_operand(value: int, size: int) -> Operand:
    op = Operand("imm", size)
    v = op.value = value & op.mask

    def put(r, s, x):
        raise Unsupported("immediate destination")
    op.get = lambda r, s: v
    op.put = put
    return op


def compile_operand(cs_op, next_ip: int, keys: Mapping[str, object], addr32: bool) -> Operand:
    """Compile one capstone operand (detail on) for the given register keys."""
    if cs_op.type == X.X86_OP_REG:
        return _reg_operand(cs_op.reg, keys)
    if cs_op.type == X.X86_OP_IMM:
        return _imm_operand(cs_op.imm, cs_op.size)
    if cs_op.type == X.X86_OP_MEM:
        return _mem_operand(cs_op, cs_op.size, next_ip, keys, addr32)
    raise Unsupported("unknown operand type")
