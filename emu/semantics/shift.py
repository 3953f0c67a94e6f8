"""Shifts and rotates: shl/sal, shr, sar, rol, ror, by 1, imm8 or cl.

The count is masked to 5 bits (6 for 64-bit operands). A masked count of zero changes no
flags, but the destination is still written (a 32-bit register is zero-extended, as the CPU
does). Which flags are defined depends on the count, so the undefined-flag entry is a function.
With a flags oracle (emu.flag_oracle), a nonzero count takes all six status flags from it.
"""

from __future__ import annotations

from capstone import x86_const as X

from ..flags import AF, CF, OF, STATUS, result
from ..registers import GPR
from .context import Context, Spec


def _shl(v, c, bits, mask, f):
    res = (v << c) & mask
    cf = (v >> (bits - c)) & 1 if c <= bits else 0
    of = ((res >> (bits - 1)) & 1) ^ cf
    return res, (f & ~STATUS) | cf | result(res, bits) | (of << 11)


def _shr(v, c, bits, mask, f):
    res = v >> c
    cf = (v >> (c - 1)) & 1
    of = (v >> (bits - 1)) & 1
    return res, (f & ~STATUS) | cf | result(res, bits) | (of << 11)


def _sar(v, c, bits, mask, f):
    sign = 1 << (bits - 1)
    sv = (v ^ sign) - sign
    res = (sv >> c) & mask
    cf = (sv >> (c - 1)) & 1
    return res, (f & ~STATUS) | cf | result(res, bits)


def _rol(v, c, bits, mask, f):
    c %= bits
    res = ((v << c) | (v >> (bits - c))) & mask
    cf = res & 1
    of = ((res >> (bits - 1)) & 1) ^ cf
    return res, (f & ~(CF | OF)) | cf | (of << 11)


def _ror(v, c, bits, mask, f):
    c %= bits
    res = ((v >> c) | (v << (bits - c))) & mask
    cf = (res >> (bits - 1)) & 1
    of = cf ^ ((res >> (bits - 2)) & 1)
    return res, (f & ~(CF | OF)) | cf | (of << 11)


def _shift(operation, name: str):
    def build(ctx: Context):
        ops = ctx.ops
        if len(ops) == 1:  # the implicit-1 form, if capstone reports it so
            dst, count = ops[0], None
        else:
            dst, count = ctx.operands(2)
        get, put, bits, mask = dst.get, dst.put, dst.bits, dst.mask
        count_mask = 0x3F if bits == 64 else 0x1F
        get_count = count.get if count is not None else (lambda r, s: 1)
        F, RIP, nxt = ctx.FLAGS, ctx.RIP, ctx.next_ip
        native = ctx.native_flags(name, bits)

        def run(s):
            r = s.regs
            c = get_count(r, s) & count_mask
            v = get(r, s)
            if c:
                res, f = operation(v, c, bits, mask, r[F])
                put(r, s, res)
                r[F] = f if native is None else native(v, c, r[F])
            else:
                put(r, s, v)
            r[RIP] = nxt
        return run
    return build


def _count(insn, regs) -> tuple[int, int]:
    """(masked count, operand bits) of a shift or rotate about to run from `regs`."""
    dst = insn.operands[0]
    bits = dst.size * 8
    if len(insn.operands) == 1:
        raw = 1
    elif insn.operands[1].type == X.X86_OP_IMM:
        raw = insn.operands[1].imm
    else:
        raw = regs[GPR[insn.operands[1].reg][0]]
    return raw & (0x3F if bits == 64 else 0x1F), bits


def _undefined_shift(insn, regs) -> int:
    """SHL/SHR/SAR: no flag changes at count 0; else AF undefined, OF unless the count is 1,
    and for SHL/SHR (not SAR) CF when the count is >= the operand width (SDM Vol. 2B SAL/SAR/
    SHL/SHR, Flags Affected; reachable with 8- and 16-bit operands only)."""
    c, bits = _count(insn, regs)
    if c == 0:
        return 0
    cf = CF if c >= bits and insn.id != X.X86_INS_SAR else 0
    return AF | (OF if c != 1 else 0) | cf


def _undefined_rotate(insn, regs) -> int:
    """ROL/ROR: OF is defined only for 1-bit rotates."""
    c, _ = _count(insn, regs)
    return OF if c > 1 else 0


_I = lambda name: getattr(X, f"X86_INS_{name}")  # noqa: E731

SPECS = {
    _I("SHL"): Spec(_shift(_shl, "shl"), _undefined_shift),
    _I("SAL"): Spec(_shift(_shl, "shl"), _undefined_shift),
    _I("SHR"): Spec(_shift(_shr, "shr"), _undefined_shift),
    _I("SAR"): Spec(_shift(_sar, "sar"), _undefined_shift),
    _I("ROL"): Spec(_shift(_rol, "rol"), _undefined_rotate),
    _I("ROR"): Spec(_shift(_ror, "ror"), _undefined_rotate),
}
