"""Data movement: nop forms, mov family, lea, xchg, push/pop, leave, sign extensions,
cmovcc and setcc.

Ordering rule for every handler: read everything, compute everything, write memory (at most
one store), then registers. A store that faults therefore leaves the state untouched.
"""

from __future__ import annotations

from capstone import x86_const as X

from ..errors import MemoryFault, Unsupported
from ..flags import AC, CONDITION_CODES, CONDITION_MASK, CONDITION_TABLE
from ..operands import effective_address
from ..registers import M64
from .context import Context, Spec


def nop(ctx: Context):
    RIP, nxt = ctx.RIP, ctx.next_ip

    def run(s):
        s.regs[RIP] = nxt
    return run


def mov(ctx: Context):
    """mov, movabs, movzx: the source's unsigned value lands in the destination."""
    dst, src = ctx.operands(2)
    get, put, RIP, nxt = src.get, dst.put, ctx.RIP, ctx.next_ip
    if dst.kind == src.kind == "reg" and dst.size == src.size == 8:
        d, k = dst.key, src.key  # mov r64, r64 (mov rbp, rsp): the accessors inlined

        def run64(s):
            r = s.regs
            r[d] = r[k]
            r[RIP] = nxt
        return run64

    def run(s):
        r = s.regs
        put(r, s, get(r, s))
        r[RIP] = nxt
    return run


def movsx(ctx: Context):
    """movsx, movsxd: sign-extend the source to the destination's width."""
    dst, src = ctx.operands(2)
    get, put, RIP, nxt = src.get, dst.put, ctx.RIP, ctx.next_ip
    sign, mask = 1 << (src.bits - 1), dst.mask

    def run(s):
        r = s.regs
        put(r, s, ((get(r, s) ^ sign) - sign) & mask)
        r[RIP] = nxt
    return run


def lea(ctx: Context):
    """The effective address without any segment base (lea ignores segments)."""
    dst = ctx.operands(2)[0]
    mem = ctx.mem_operand().mem
    if mem.segment not in (X.X86_REG_INVALID, X.X86_REG_FS, X.X86_REG_GS, X.X86_REG_DS,
                           X.X86_REG_ES, X.X86_REG_CS, X.X86_REG_SS):
        raise Unsupported("unknown segment")

    class _NoSegment:  # the same fields, segment dropped
        base, index, scale, disp, segment = mem.base, mem.index, mem.scale, mem.disp, X.X86_REG_INVALID
    ea = effective_address(_NoSegment, ctx.next_ip, ctx.keys, ctx.addr32)
    put, mask, RIP, nxt = dst.put, dst.mask, ctx.RIP, ctx.next_ip

    def run(s):
        r = s.regs
        put(r, s, ea(r) & mask)
        r[RIP] = nxt
    return run


def xchg(ctx: Context):
    a, b = ctx.operands(2)
    if a.kind == "reg" and b.kind == "mem":
        a, b = b, a  # store to memory first: it is the one access that can fault
    get_a, get_b, put_a, put_b = a.get, b.get, a.put, b.put
    RIP, nxt = ctx.RIP, ctx.next_ip

    def run(s):
        r = s.regs
        va, vb = get_a(r, s), get_b(r, s)
        put_a(r, s, vb)
        put_b(r, s, va)
        r[RIP] = nxt
    return run


def push(ctx: Context):
    """push r/m/imm, 64-bit or (0x66) 16-bit. The value (and a memory source's address) is
    taken before rsp moves."""
    (src,) = ctx.operands(1)
    get, RSP, RIP, nxt = src.get, ctx.RSP, ctx.RIP, ctx.next_ip
    if src.kind == "reg" and src.size == 8:  # push r64, the prologue's first instruction
        key, FLAGS = src.key, ctx.FLAGS

        def run(s):
            # The alignment check inlined (as emu.decode._AlignmentChecked would): this plan runs
            # on most probe hits, and one test here is cheaper than a wrapping call.
            r = s.regs
            sp = (r[RSP] - 8) & M64
            if sp & 7 and r[FLAGS] & AC:
                raise MemoryFault(sp, 8, "write")
            s.write(sp, r[key].to_bytes(8, "little"))
            r[RSP] = sp
            r[RIP] = nxt
        run.checks_alignment = True  # type: ignore[attr-defined]
        return run

    width = 2 if ctx.opsize16 else 8
    mask = (1 << (8 * width)) - 1

    def run(s):
        r = s.regs
        v = get(r, s)
        sp = (r[RSP] - width) & M64
        s.write(sp, (v & mask).to_bytes(width, "little"))
        r[RSP] = sp
        r[RIP] = nxt
    return run


class _StackAfterPop:
    """Registers as a pop's memory destination sees them: rsp already incremented (SDM POP)."""

    __slots__ = ("regs", "rsp_key", "rsp")

    def __init__(self, regs, rsp_key, rsp):
        self.regs, self.rsp_key, self.rsp = regs, rsp_key, rsp

    def __getitem__(self, key):
        return self.rsp if key == self.rsp_key else self.regs[key]


def pop(ctx: Context):
    """pop r/m, 64-bit or (0x66) 16-bit."""
    (dst,) = ctx.operands(1)
    put, RSP, RIP, nxt = dst.put, ctx.RSP, ctx.RIP, ctx.next_ip
    width = 2 if ctx.opsize16 else 8
    from_bytes = int.from_bytes
    if dst.kind == "mem":
        ea = dst.address

        def run(s):
            r = s.regs
            sp = r[RSP]
            v = s.read(sp, width)
            new_sp = (sp + width) & M64
            s.write(ea(_StackAfterPop(r, RSP, new_sp)), v)
            r[RSP] = new_sp
            r[RIP] = nxt
        return run

    def run(s):
        r = s.regs
        sp = r[RSP]
        v = from_bytes(s.read(sp, width), "little")
        r[RSP] = (sp + width) & M64
        put(r, s, v)  # after the increment, so `pop rsp` loads the popped value
        r[RIP] = nxt
    return run


def leave(ctx: Context):
    ctx.no_opsize16()
    RSP, RBP, RIP, nxt = ctx.RSP, ctx.keys["rbp"], ctx.RIP, ctx.next_ip
    from_bytes = int.from_bytes

    def run(s):
        r = s.regs
        frame = r[RBP]
        r_bp = from_bytes(s.read(frame, 8), "little")
        r[RSP] = (frame + 8) & M64
        r[RBP] = r_bp
        r[RIP] = nxt
    return run


def _widen(narrow_bits: int, wide_bits: int):
    """cbw/cwde/cdqe: the low `narrow_bits` of rax sign-extended to `wide_bits` in place."""
    sign, mask = 1 << (narrow_bits - 1), (1 << narrow_bits) - 1

    def build(ctx: Context):
        key, RIP, nxt = ctx.RAX, ctx.RIP, ctx.next_ip
        wide_mask = (1 << wide_bits) - 1
        keep = M64 ^ wide_mask if wide_bits < 32 else 0

        def run(s):
            r = s.regs
            v = ((r[key] & mask) ^ sign) - sign
            r[key] = (r[key] & keep) | (v & wide_mask)
            r[RIP] = nxt
        return run
    return build


def _sign_fill(bits: int):
    """cwd/cdq/cqo: rdx (dx, edx) = all ones if rax's sign bit is set, else zero."""
    sign = 1 << (bits - 1)
    mask = (1 << bits) - 1

    def build(ctx: Context):
        RAX, RDX, RIP, nxt = ctx.RAX, ctx.RDX, ctx.RIP, ctx.next_ip
        keep = M64 ^ mask if bits == 16 else 0

        def run(s):
            r = s.regs
            fill = mask if r[RAX] & sign else 0
            r[RDX] = (r[RDX] & keep) | fill
            r[RIP] = nxt
        return run
    return build


def condition_code(mnemonic: str, prefix: str) -> int:
    """The condition number (0-15) of a jcc/cmovcc/setcc mnemonic, e.g. cmovne -> 5."""
    return CONDITION_CODES[mnemonic.split()[-1][len(prefix):]]


def cmovcc(ctx: Context):
    """The source is read whatever the condition (it may fault); a 32-bit destination is
    zero-extended even when the move does not happen."""
    dst, src = ctx.operands(2)
    taken = CONDITION_TABLE[condition_code(ctx.insn.mnemonic, "cmov")]
    get, get_dst, put, F, RIP, nxt = src.get, dst.get, dst.put, ctx.FLAGS, ctx.RIP, ctx.next_ip

    def run(s):
        r = s.regs
        v = get(r, s)
        put(r, s, v if taken[r[F] & CONDITION_MASK] else get_dst(r, s))
        r[RIP] = nxt
    return run


def setcc(ctx: Context):
    (dst,) = ctx.operands(1)
    taken = CONDITION_TABLE[condition_code(ctx.insn.mnemonic, "set")]
    put, F, RIP, nxt = dst.put, ctx.FLAGS, ctx.RIP, ctx.next_ip

    def run(s):
        r = s.regs
        put(r, s, 1 if taken[r[F] & CONDITION_MASK] else 0)
        r[RIP] = nxt
    return run


_I = lambda name: getattr(X, f"X86_INS_{name}")  # noqa: E731

SPECS = {
    **{_I(m): Spec(nop) for m in ("NOP", "ENDBR64", "ENDBR32", "PAUSE")},
    **{_I(m): Spec(mov) for m in ("MOV", "MOVABS", "MOVZX")},
    _I("MOVSX"): Spec(movsx), _I("MOVSXD"): Spec(movsx),
    _I("LEA"): Spec(lea), _I("XCHG"): Spec(xchg),
    _I("PUSH"): Spec(push), _I("POP"): Spec(pop), _I("LEAVE"): Spec(leave),
    _I("CBW"): Spec(_widen(8, 16)), _I("CWDE"): Spec(_widen(16, 32)),
    _I("CDQE"): Spec(_widen(32, 64)),
    _I("CWD"): Spec(_sign_fill(16)), _I("CDQ"): Spec(_sign_fill(32)), _I("CQO"): Spec(_sign_fill(64)),
    **{_I(f"CMOV{cc.upper()}"): Spec(cmovcc) for cc in CONDITION_CODES if hasattr(X, f"X86_INS_CMOV{cc.upper()}")},
    **{_I(f"SET{cc.upper()}"): Spec(setcc) for cc in CONDITION_CODES if hasattr(X, f"X86_INS_SET{cc.upper()}")},
}
