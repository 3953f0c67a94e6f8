"""Instructions whose business is rflags itself: pushf/popf, lahf/sahf, clc stc cmc cld std."""

from __future__ import annotations

from capstone import x86_const as X

from ..flags import AF, CF, DF, PF, POPF_USER_MASK, RF, SF, ZF
from ..registers import M64
from .context import Context, Spec

_VM = 0x20000
_LAHF_BITS = SF | ZF | AF | PF | CF


def pushf(ctx: Context):
    """The image pushed has RF and VM cleared (SDM PUSHF)."""
    ctx.no_opsize16()
    F, RSP, RIP, nxt = ctx.FLAGS, ctx.RSP, ctx.RIP, ctx.next_ip

    def run(s):
        r = s.regs
        sp = (r[RSP] - 8) & M64
        s.write(sp, (r[F] & ~(RF | _VM)).to_bytes(8, "little"))
        r[RSP] = sp
        r[RIP] = nxt
    return run


def popf(ctx: Context):
    """At CPL 3 with IOPL 0, POPF changes only the bits in POPF_USER_MASK; RF is cleared."""
    ctx.no_opsize16()
    F, RSP, RIP, nxt = ctx.FLAGS, ctx.RSP, ctx.RIP, ctx.next_ip
    keep = M64 & ~(POPF_USER_MASK | RF)

    def run(s):
        r = s.regs
        sp = r[RSP]
        v = int.from_bytes(s.read(sp, 8), "little")
        r[F] = (r[F] & keep) | (v & POPF_USER_MASK) | 2
        r[RSP] = (sp + 8) & M64
        r[RIP] = nxt
    return run


def lahf(ctx: Context):
    F, RAX, RIP, nxt = ctx.FLAGS, ctx.RAX, ctx.RIP, ctx.next_ip

    def run(s):
        r = s.regs
        ah = (r[F] & _LAHF_BITS) | 2
        r[RAX] = (r[RAX] & ~0xFF00 & M64) | (ah << 8)
        r[RIP] = nxt
    return run


def sahf(ctx: Context):
    F, RAX, RIP, nxt = ctx.FLAGS, ctx.RAX, ctx.RIP, ctx.next_ip

    def run(s):
        r = s.regs
        r[F] = (r[F] & ~_LAHF_BITS & M64) | ((r[RAX] >> 8) & _LAHF_BITS) | 2
        r[RIP] = nxt
    return run


def _set_flag(clear: int, set_: int, toggle: int = 0):
    """clc stc cmc cld std: one bit cleared, set or complemented."""
    def build(ctx: Context):
        F, RIP, nxt = ctx.FLAGS, ctx.RIP, ctx.next_ip

        def run(s):
            r = s.regs
            r[F] = ((r[F] & ~clear) | set_) ^ toggle
            r[RIP] = nxt
        return run
    return build


_I = lambda name: getattr(X, f"X86_INS_{name}")  # noqa: E731

SPECS = {
    _I("PUSHFQ"): Spec(pushf), _I("POPFQ"): Spec(popf),
    _I("LAHF"): Spec(lahf), _I("SAHF"): Spec(sahf),
    _I("CLC"): Spec(_set_flag(CF, 0)), _I("STC"): Spec(_set_flag(0, CF)),
    _I("CMC"): Spec(_set_flag(0, 0, CF)),
    _I("CLD"): Spec(_set_flag(DF, 0)), _I("STD"): Spec(_set_flag(0, DF)),
}
