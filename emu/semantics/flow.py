"""Control flow: jmp, jcc, jrcxz/jecxz, loop/loope/loopne, call, ret.

Relative targets are constants at compile time (capstone reports them absolute). Indirect
targets are read before the return address is pushed, so `call [rsp]` reads the old stack top.
16-bit operand-size branches are refused: Intel and AMD disagree on them.
"""

from __future__ import annotations

from capstone import x86_const as X

from ..errors import MemoryFault, Unsupported
from ..flags import CONDITION_MASK, CONDITION_TABLE, ZF
from ..operands import M32
from ..registers import M64
from .context import Context, Spec
from .data import condition_code


def _target(ctx: Context):
    """(constant target or None, getter for an indirect target)."""
    (op,) = ctx.operands(1)
    if op.kind == "imm":
        if not ctx.opsize16:
            # capstone sizes the target by a 0x66 prefix even when REX.W overrides it (`data16
            # data16 rex.W call`, TLS code): op.value would be cut to 32 bits.
            return ctx.insn.operands[0].imm & M64, None
        return op.value, None
    if op.size != 8:
        raise Unsupported("branch through a non-64-bit operand")
    return None, op.get


def _check_canonical(dest: int) -> int:
    """A branch to a non-canonical address raises #GP at the branch itself (SDM Vol. 2A, JMP,
    CALL, RET: 64-bit mode exceptions), before anything is pushed or popped."""
    if ((dest + (1 << 47)) & M64) >> 48:
        raise MemoryFault(dest, 1, "fetch")
    return dest


def jmp(ctx: Context):
    ctx.no_opsize16()
    target, get = _target(ctx)
    RIP = ctx.RIP
    if get is None:
        def run(s):
            s.regs[RIP] = target
    else:
        def run(s):
            r = s.regs
            r[RIP] = _check_canonical(get(r, s))
    return run


def jcc(ctx: Context):
    ctx.no_opsize16()
    target, _ = _target(ctx)
    taken = CONDITION_TABLE[condition_code(ctx.insn.mnemonic, "j")]
    F, RIP, nxt = ctx.FLAGS, ctx.RIP, ctx.next_ip

    def run(s):
        r = s.regs
        r[RIP] = target if taken[r[F] & CONDITION_MASK] else nxt
    return run


def jrcxz(ctx: Context):
    """jrcxz tests rcx; jecxz (0x67 prefix) tests ecx."""
    target, _ = _target(ctx)
    RCX, RIP, nxt = ctx.RCX, ctx.RIP, ctx.next_ip
    mask = M32 if ctx.insn.id == X.X86_INS_JECXZ else M64

    def run(s):
        r = s.regs
        r[RIP] = nxt if r[RCX] & mask else target
    return run


def _loop(zf_rule):
    """loop/loope/loopne: decrement the count register (rcx, or ecx with 0x67, which is then
    zero-extended like any 32-bit write), branch while it is non-zero and the ZF rule holds."""
    def build(ctx: Context):
        target, _ = _target(ctx)
        RCX, F, RIP, nxt = ctx.RCX, ctx.FLAGS, ctx.RIP, ctx.next_ip
        mask = M32 if ctx.addr32 else M64

        def run(s):
            r = s.regs
            count = (r[RCX] - 1) & mask
            r[RCX] = count
            zf = r[F] & ZF
            r[RIP] = target if count and zf_rule(zf) else nxt
        return run
    return build


def call(ctx: Context):
    ctx.no_opsize16()
    target, get = _target(ctx)
    RSP, RIP = ctx.RSP, ctx.RIP
    ret_bytes = ctx.next_ip.to_bytes(8, "little")

    def run(s):
        r = s.regs
        dest = _check_canonical(target if get is None else get(r, s))
        sp = (r[RSP] - 8) & M64
        s.write(sp, ret_bytes)
        r[RSP] = sp
        r[RIP] = dest
    return run


def ret(ctx: Context):
    ctx.no_opsize16()
    release = 8 + (ctx.ops[0].value if ctx.ops else 0)
    RSP, RIP = ctx.RSP, ctx.RIP
    from_bytes = int.from_bytes

    def run(s):
        r = s.regs
        sp = r[RSP]
        dest = _check_canonical(from_bytes(s.read(sp, 8), "little"))
        r[RSP] = (sp + release) & M64
        r[RIP] = dest
    return run


_I = lambda name: getattr(X, f"X86_INS_{name}")  # noqa: E731
_JCC = ("JO", "JNO", "JB", "JAE", "JE", "JNE", "JBE", "JA", "JS", "JNS", "JP", "JNP",
        "JL", "JGE", "JLE", "JG")

SPECS = {
    _I("JMP"): Spec(jmp), _I("CALL"): Spec(call), _I("RET"): Spec(ret),
    **{_I(m): Spec(jcc) for m in _JCC},
    _I("JRCXZ"): Spec(jrcxz), _I("JECXZ"): Spec(jrcxz),
    _I("LOOP"): Spec(_loop(lambda zf: True)),
    _I("LOOPE"): Spec(_loop(lambda zf: zf != 0)),
    _I("LOOPNE"): Spec(_loop(lambda zf: zf == 0)),
}
