"""Integer arithmetic and logic: add adc sub sbb and or xor cmp test, inc dec neg not,
bt bts btr btc.

The two-operand ALU ops share one handler shape; the table `_BINARY` says what each computes
and whether it writes its destination (cmp and test only set flags).
"""

from __future__ import annotations

from capstone import x86_const as X

from .. import flags
from ..errors import Unsupported
from ..flags import AF, CF, KEEP, OF, PARITY, PF, SF, STATUS, ZF
from .context import Context, Spec


# Each entry makes, for one operand width, op(a, b, rflags) -> (result, status flags).
def _add(bits):
    add = flags.adder(bits)
    return lambda a, b, f: add(a, b, 0)


def _adc(bits):
    add = flags.adder(bits)
    return lambda a, b, f: add(a, b, f & CF)


def _sub(bits):
    sub = flags.subtractor(bits)
    return lambda a, b, f: sub(a, b, 0)


def _sbb(bits):
    sub = flags.subtractor(bits)
    return lambda a, b, f: sub(a, b, f & CF)


def _logic(combine):
    def make(bits):
        sign_to_sf = bits - 8

        def op(a, b, f):
            r = combine(a, b)
            return r, PARITY[r & 0xFF] | (0 if r else ZF) | ((r >> sign_to_sf) & SF)
        return op
    return make


_and = _logic(int.__and__)
_or = _logic(int.__or__)
_xor = _logic(int.__xor__)

# mnemonic -> (operation maker, writes destination?)
_BINARY = {
    "ADD": (_add, True), "ADC": (_adc, True), "SUB": (_sub, True), "SBB": (_sbb, True),
    "AND": (_and, True), "OR": (_or, True), "XOR": (_xor, True),
    "CMP": (_sub, False), "TEST": (_and, False),
}


def _binary(make_operation, writes: bool, name: str):
    def build(ctx: Context):
        dst, src = ctx.operands(2)
        get_d, get_s, put = dst.get, src.get, dst.put
        operation = make_operation(dst.bits)
        if make_operation in (_and, _or, _xor):  # AF is undefined: the oracle's, if any
            native = ctx.native_flags(name, dst.bits)
            if native is not None:
                operation = _with_native_flags(operation, native)
        F, RIP, nxt = ctx.FLAGS, ctx.RIP, ctx.next_ip
        if src.kind == "imm":  # an imm8/imm32 arrives sign-extended to the operand size
            imm = src.value & dst.mask
            get_s = lambda r, s: imm  # noqa: E731
            if writes and dst.kind == "reg" and dst.size == 8:
                return _reg64_imm(dst.key, imm, operation, make_operation, F, RIP, nxt)

        if writes:
            def run(s):
                r = s.regs
                f = r[F]
                res, fl = operation(get_d(r, s), get_s(r, s), f)
                put(r, s, res)
                r[F] = (f & KEEP) | fl
                r[RIP] = nxt
        else:
            def run(s):
                r = s.regs
                f = r[F]
                r[F] = (f & KEEP) | operation(get_d(r, s), get_s(r, s), f)[1]
                r[RIP] = nxt
        return run
    return build


def _reg64_imm(key, imm: int, operation, make_operation, F, RIP, nxt):
    """`op r64, imm` (sub rsp, N and add rsp, N of every prologue and epilogue): the same
    computation with the operand accessors inlined, since this runs on a probe's every hit.
    add and sub call the width's flag family directly (carry/borrow in: 0)."""
    direct = {_add: flags.adder, _sub: flags.subtractor}.get(make_operation)
    if direct is not None:
        family = direct(64)

        def run(s):
            r = s.regs
            f = r[F]
            res, fl = family(r[key], imm, 0)
            r[key] = res
            r[F] = (f & KEEP) | fl
            r[RIP] = nxt
        return run

    def run(s):
        r = s.regs
        f = r[F]
        res, fl = operation(r[key], imm, f)
        r[key] = res
        r[F] = (f & KEEP) | fl
        r[RIP] = nxt
    return run


def _with_native_flags(operation, native):
    """operation(a, b, f) whose status flags come from the flags oracle."""
    def op(a, b, f):
        return operation(a, b, f)[0], native(a, b, f) & STATUS
    return op


def _unary(kind: str):
    """inc and dec keep CF; neg sets CF when the operand was not zero; not sets no flags."""
    def build(ctx: Context):
        (dst,) = ctx.operands(1)
        get, put, bits, mask = dst.get, dst.put, dst.bits, dst.mask
        F, RIP, nxt = ctx.FLAGS, ctx.RIP, ctx.next_ip

        def run(s):
            r = s.regs
            f = r[F]
            v = get(r, s)
            if kind == "not":
                put(r, s, v ^ mask)
                r[RIP] = nxt
                return
            if kind == "inc":
                res, fl = flags.add(v, 1, 0, bits)
                fl = (fl & ~CF) | (f & CF)
            elif kind == "dec":
                res, fl = flags.sub(v, 1, 0, bits)
                fl = (fl & ~CF) | (f & CF)
            else:
                res, fl = flags.sub(0, v, 0, bits)
            put(r, s, res)
            r[F] = (f & KEEP) | fl
            r[RIP] = nxt
        return run
    return build


def _bit_test(kind: str):
    """bt/bts/btr/btc with a register or memory base and an immediate or register offset.

    CF receives the bit; ZF keeps its value; OF SF AF PF are undefined (left unchanged here,
    or the flags oracle's). A memory base with a register offset addresses a bit string
    beyond the operand, which is not emulated.
    """
    def build(ctx: Context):
        base, offset = ctx.operands(2)
        if base.kind == "mem" and offset.kind != "imm":
            raise Unsupported("bit string addressed by a register offset")
        get, put, get_off = base.get, base.put, offset.get
        modulo = base.bits - 1
        F, RIP, nxt = ctx.FLAGS, ctx.RIP, ctx.next_ip
        native = ctx.native_flags(kind, base.bits)

        def run(s):
            r = s.regs
            v = get(r, s)
            bit = get_off(r, s) & modulo
            cf = (v >> bit) & 1
            if kind == "bts":
                put(r, s, v | (1 << bit))
            elif kind == "btr":
                put(r, s, v & ~(1 << bit))
            elif kind == "btc":
                put(r, s, v ^ (1 << bit))
            r[F] = (r[F] & ~CF) | cf if native is None else native(v, bit, r[F])
            r[RIP] = nxt
        return run
    return build


_I = lambda name: getattr(X, f"X86_INS_{name}")  # noqa: E731

SPECS = {
    **{_I(m): Spec(_binary(op, writes, m.lower()), AF if op in (_and, _or, _xor) else 0)
       for m, (op, writes) in _BINARY.items()},
    _I("INC"): Spec(_unary("inc")), _I("DEC"): Spec(_unary("dec")),
    _I("NEG"): Spec(_unary("neg")), _I("NOT"): Spec(_unary("not")),
    **{_I(m.upper()): Spec(_bit_test(m), OF | SF | AF | PF) for m in ("bt", "bts", "btr", "btc")},
}
