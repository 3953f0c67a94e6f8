"""The SSE moves and zeroing idioms found at probe sites: movd, movq, movss, movsd (scalar),
movdqa/movdqu/movaps/movups/movapd/movupd, pxor/xorps/xorpd. XMM registers are unsigned
128-bit ints in `regs` (keys xmm0..xmm15); a state without them does not emulate these.

The aligned forms, and legacy-SSE arithmetic with a memory operand (pxor xmm, m128), raise #GP
on a misaligned address: reported as a MemoryFault so the caller lets the CPU do it.
VEX forms (vmovdqu...) also clear the upper YMM bits, which are not modelled: refused.
"""

from __future__ import annotations

from capstone import x86_const as X

from ..errors import MemoryFault
from .context import Context, Spec

M128 = (1 << 128) - 1


def _aligned(op, access: str):
    """Wrap a 16-byte memory operand's get/put with the #GP alignment check."""
    ea, get, put = op.address, op.get, op.put

    def checked_get(r, s):
        a = ea(r)
        if a & 15:
            raise MemoryFault(a, 16, "read")
        return get(r, s)

    def checked_put(r, s, v):
        a = ea(r)
        if a & 15:
            raise MemoryFault(a, 16, "write")
        put(r, s, v)
    return checked_get, checked_put


def _move(scalar_bytes: int | None, aligned: bool = False):
    """The shape shared by every SSE move.

    scalar_bytes None: a full 128-bit move. Otherwise the low `scalar_bytes` move: into an xmm
    register from memory or a general register the rest is zeroed (movd, movq, movss/movsd
    loads, and movq xmm, xmm); between two xmm registers movss/movsd merge into the low part;
    a store writes only the low part.
    """
    def build(ctx: Context):
        dst, src = ctx.operands(2)
        get, put = src.get, dst.put
        if aligned:
            if src.kind == "mem":
                get, _ = _aligned(src, "read")
            if dst.kind == "mem":
                _, put = _aligned(dst, "write")
        RIP, nxt = ctx.RIP, ctx.next_ip
        low = M128 if scalar_bytes is None else (1 << (8 * scalar_bytes)) - 1
        merge = (scalar_bytes in (4, 8) and dst.kind == src.kind == "xmm"
                 and ctx.insn.id in (X.X86_INS_MOVSS, X.X86_INS_MOVSD))
        if merge:
            get_dst = dst.get

            def run(s):
                r = s.regs
                put(r, s, (get_dst(r, s) & ~low & M128) | (get(r, s) & low))
                r[RIP] = nxt
        else:
            def run(s):
                r = s.regs
                put(r, s, get(r, s) & low)
                r[RIP] = nxt
        return run
    return build


def _movd_movq(ctx: Context):
    size = 4 if ctx.insn.id == X.X86_INS_MOVD else 8
    return _move(size)(ctx)


def _xor(ctx: Context):
    dst, src = ctx.operands(2)
    get, get_dst, put = src.get, dst.get, dst.put
    if src.kind == "mem":
        get, _ = _aligned(src, "read")
    RIP, nxt = ctx.RIP, ctx.next_ip

    def run(s):
        r = s.regs
        put(r, s, get_dst(r, s) ^ get(r, s))
        r[RIP] = nxt
    return run


_I = lambda name: getattr(X, f"X86_INS_{name}")  # noqa: E731

SPECS = {
    _I("MOVD"): Spec(_movd_movq), _I("MOVQ"): Spec(_movd_movq),
    _I("MOVSS"): Spec(_move(4)), _I("MOVSD"): Spec(_move(8)),
    **{_I(m): Spec(_move(None, aligned=True)) for m in ("MOVDQA", "MOVAPS", "MOVAPD")},
    **{_I(m): Spec(_move(None)) for m in ("MOVDQU", "MOVUPS", "MOVUPD")},
    **{_I(m): Spec(_xor) for m in ("PXOR", "XORPS", "XORPD")},
}

#: ids whose SSE forms are emulated (the group check in the refusal table lets them through)
EMULATED_SSE = frozenset(SPECS)
