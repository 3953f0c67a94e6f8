"""Multiplication: mul and imul with one operand (rdx:rax = rax * src), imul with two and
three operands (truncated product). CF = OF = "the product did not fit"; SF ZF AF PF are
undefined, and set here from the low half the way QEMU (and so Unicorn) does, unless a flags
oracle computes them (emu.flag_oracle).
"""

from __future__ import annotations

from capstone import x86_const as X

from ..errors import Unsupported
from ..flags import AF, CF, KEEP, OF, PF, SF, ZF, result
from ..registers import M64
from .context import Context, Spec


def _signed(v: int, bits: int) -> int:
    sign = 1 << (bits - 1)
    return (v ^ sign) - sign


def _one_operand(signed: bool):
    """mul/imul r/m: the double-width product of the accumulator and the source."""
    def build(ctx: Context):
        (src,) = ctx.operands(1)
        get, bits, mask = src.get, src.bits, src.mask
        RAX, RDX, F, RIP, nxt = ctx.RAX, ctx.RDX, ctx.FLAGS, ctx.RIP, ctx.next_ip
        native = ctx.native_flags("imul1" if signed else "mul", bits)

        def run(s):
            r = s.regs
            b = get(r, s)
            a = r[RAX] & mask
            if signed:
                full = _signed(a, bits) * _signed(b, bits)
                low = full & mask
                overflow = full != _signed(low, bits)
            else:
                full = a * b
                low = full & mask
                overflow = full > mask
            high = (full >> bits) & mask
            if bits == 8:  # ax = al * src8
                r[RAX] = (r[RAX] & ~0xFFFF & M64) | (high << 8) | low
            elif bits == 16:  # dx:ax, upper bits kept
                r[RAX] = (r[RAX] & ~0xFFFF & M64) | low
                r[RDX] = (r[RDX] & ~0xFFFF & M64) | high
            else:  # edx:eax zero-extended, or rdx:rax
                r[RAX] = low
                r[RDX] = high
            if native is None:
                r[F] = (r[F] & KEEP) | (CF | OF if overflow else 0) | result(low, bits)
            else:
                r[F] = native(a, b, r[F])
            r[RIP] = nxt
        return run
    return build


def _truncating(ctx: Context):
    """imul r, r/m (dst *= src) and imul r, r/m, imm (dst = src * imm)."""
    if len(ctx.ops) == 2:
        dst, a_op = ctx.ops
        b_op = dst
    elif len(ctx.ops) == 3:
        dst, a_op, b_op = ctx.ops
    else:
        raise Unsupported("unexpected imul form")
    get_a, get_b, put = a_op.get, b_op.get, dst.put
    bits, mask = dst.bits, dst.mask
    if b_op.kind == "imm":
        imm = _signed(b_op.value & mask, bits)
        get_b = None
    F, RIP, nxt = ctx.FLAGS, ctx.RIP, ctx.next_ip
    native = ctx.native_flags("imul2", bits)

    def run(s):
        r = s.regs
        a = _signed(get_a(r, s), bits)
        b = imm if get_b is None else _signed(get_b(r, s), bits)
        full = a * b
        low = full & mask
        overflow = full != _signed(low, bits)
        put(r, s, low)
        if native is None:
            r[F] = (r[F] & KEEP) | (CF | OF if overflow else 0) | result(low, bits)
        else:
            r[F] = native(a & mask, b & mask, r[F])
        r[RIP] = nxt
    return run


def _imul(ctx: Context):
    return _one_operand(True)(ctx) if len(ctx.ops) == 1 else _truncating(ctx)


_I = lambda name: getattr(X, f"X86_INS_{name}")  # noqa: E731

SPECS = {
    _I("MUL"): Spec(_one_operand(False), SF | ZF | AF | PF),
    _I("IMUL"): Spec(_imul, SF | ZF | AF | PF),
}
