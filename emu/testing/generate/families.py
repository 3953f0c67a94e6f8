"""Operand builders, one per instruction family of probe sites (FAMILIES).
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Callable, Iterable

from hypothesis import assume

from .machine import ACC, CONDITIONS, R32, R64, REGS, SPAN, XMM
from .operand_specs import Imm, Mem, Reg, Spec, Target
from .values import _BOOLS, _either, _ints, _pick, aim, value


# ---------------------------------------------------------------- strategies: operands


class Builder:
    """Draws operands for one family. One per example: it records what the memory operand needs."""

    def __init__(self, draw, base: int, code_address: int):
        self.draw = draw
        self.base = base
        self.code_address = code_address

    def reg(self, size: int, exclude: Iterable[str] = ()) -> Reg:
        return Reg(self.draw(_pick(tuple(r for r in REGS[size] if r not in exclude))))

    def imm(self, size: int) -> Imm:
        """An immediate as the instruction encodes it (8-bit, 16-bit or a sign-extended 32-bit)."""
        bits = min(size, 4) * 8
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        value = self.draw(_either(_ints(-128, 127), _ints(lo, hi),
                                    _pick((lo, hi, 0, -1, 1))))
        return Imm(value, size)

    def imm8(self, size: int = 1) -> Imm:
        return Imm(self.draw(_ints(-128, 127)), size)

    def count(self) -> Imm:
        return Imm(self.draw(_either(_ints(0, 65), _ints(0, 255))), 1)

    def xmm(self) -> Reg:
        return Reg(self.draw(_pick(XMM)))

    def mem(self, size: int, ptr: bool = True, addr32: bool | None = None, align: int = 1) -> Mem:
        """A memory operand aimed by `aim`; `align` rounds the aim down (the edge and gap
        cases then still fault, on an aligned address)."""
        draw = self.draw
        seg = draw(_pick((None,) * 6 + ("fs", "fs", "gs")))
        form = draw(_pick(("base",) * 3 + ("base_index",) * 3 + ("index", "rip", "rip")))
        low = self.base < (1 << 32) - SPAN
        if addr32 is None:
            addr32 = form != "rip" and (low or seg is not None) and draw(_ints(0, 5)) == 0
        names = R32 if addr32 else R64
        base = index = None
        scale = draw(_pick((1, 2, 4, 8)))
        if form in ("base", "base_index"):
            base = draw(_pick(names))
        if form in ("index", "base_index"):
            index = draw(_pick(tuple(r for r in names if r not in ("rsp", "esp"))))
        disp_kind = draw(_pick(("none", "8", "32")))
        disp = {"none": 0, "8": draw(_ints(-128, 127)),
                "32": draw(_ints(-(1 << 31), (1 << 31) - 1))}[disp_kind]
        if form == "index" and disp_kind == "none":
            disp = draw(_ints(-128, 127))
        return Mem(size, base, index, scale, disp, seg, rip=form == "rip", ptr=ptr,
                   aim=aim(draw, self.base, size) & ~(align - 1))

    def moffs(self, size: int) -> Mem:
        """The moffs form (`movabs al, [abs64]`), aimed with a segment base or a plain address."""
        seg = self.draw(_pick((None, "fs", "gs")))
        return Mem(size, seg=seg, absolute=True, aim=aim(self.draw, self.base, size))

    def rm(self, size: int) -> Reg | Mem:
        return self.mem(size) if self.draw(_BOOLS) else self.reg(size)

    def target(self, near: bool) -> Target:
        lo, hi = (-120, 125) if near else (-(1 << 31) + 64, (1 << 31) - 64)
        delta = self.draw(_either(_ints(lo, hi), _ints(-100, 100)))
        address = self.code_address + delta
        assume(0 < address < (1 << 47))
        return Target(address)


def _lockable(b: Builder, mnemonic: str, ops: tuple) -> Spec:
    lock = isinstance(ops[0], Mem) and b.draw(_ints(0, 3)) == 0
    return Spec(mnemonic, ops, lock)


def _w(b: Builder, sizes=(1, 2, 4, 8)) -> int:
    return b.draw(_pick(sizes))


def f_mov(b: Builder) -> Spec:
    w = _w(b)
    form = b.draw(_pick(("rm_r", "r_rm", "rm_imm", "r_imm", "movabs", "moffs")))
    if form == "rm_r":
        return Spec("mov", (b.rm(w), b.reg(w)))
    if form == "r_rm":
        return Spec("mov", (b.reg(w), b.rm(w)))
    if form == "rm_imm":
        return Spec("mov", (b.rm(w), b.imm(w)))
    if form == "r_imm":
        return Spec("mov", (b.reg(w), b.imm(w)))
    if form == "movabs":
        return Spec("movabs", (b.reg(8), Imm(value(b.draw), 8)))
    m = b.moffs(w)
    acc = Reg(ACC[w])
    return Spec("movabs", (acc, m) if b.draw(_BOOLS) else (m, acc))


def f_movzx(b: Builder, mnemonic: str = "movzx") -> Spec:
    src = _w(b, (1, 2))
    dst = _w(b, (2, 4, 8) if src == 1 else (4, 8))
    return Spec(mnemonic, (b.reg(dst), b.rm(src)))


def f_movsxd(b: Builder) -> Spec:
    return Spec("movsxd", (b.reg(8), b.rm(4)))


def f_lea(b: Builder) -> Spec:
    return Spec("lea", (b.reg(_w(b, (2, 4, 8))), b.mem(1, ptr=False)))


# 16-bit push/pop (0x66) are not generated: the emulator used to refuse them (Intel and AMD
# disagree on 16-bit stack/branch forms); their emulation is checked in tests/emu/test_semantics.py.
def f_push(b: Builder) -> Spec:
    form = b.draw(_pick(("r64", "imm8", "imm32", "m64")))
    if form == "r64":
        return Spec("push", (b.reg(8),))
    if form == "imm8":
        return Spec("push", (b.imm8(8),))
    if form == "imm32":
        return Spec("push", (b.imm(8),))
    return Spec("push", (b.mem(8),))


def f_pop(b: Builder) -> Spec:
    return Spec("pop", (b.reg(8) if b.draw(_BOOLS) else b.mem(8),))


def f_xchg(b: Builder) -> Spec:
    w = _w(b)
    ops = (b.rm(w), b.reg(w))
    if b.draw(_BOOLS):
        ops = ops[::-1]
    return Spec("xchg", ops, lock=isinstance(ops[0], Mem) and b.draw(_BOOLS))


def f_alu(b: Builder, mnemonic: str) -> Spec:
    w = _w(b)
    form = b.draw(_pick(("rm_r", "r_rm", "rm_imm", "rm_imm8", "acc_imm")))
    if form == "rm_r":
        ops = (b.rm(w), b.reg(w))
    elif form == "r_rm":
        ops = (b.reg(w), b.rm(w))
    elif form == "rm_imm":
        ops = (b.rm(w), b.imm(w))
    elif form == "rm_imm8":
        ops = (b.rm(w), b.imm8(w))
    else:
        ops = (Reg(ACC[w]), b.imm(w))
    if mnemonic in ("cmp", "test"):
        return Spec(mnemonic, ops)
    return _lockable(b, mnemonic, ops)


def f_test(b: Builder) -> Spec:
    w = _w(b)
    form = b.draw(_pick(("rm_r", "rm_imm", "acc_imm")))
    if form == "rm_r":
        return Spec("test", (b.rm(w), b.reg(w)))
    if form == "rm_imm":
        return Spec("test", (b.rm(w), b.imm(w)))
    return Spec("test", (Reg(ACC[w]), b.imm(w)))


def f_unary(b: Builder, mnemonic: str) -> Spec:
    if mnemonic == "neg":
        # No `lock neg`: Unicorn (QEMU's locked-NEG path) computes SF/PF/AF from the wrong
        # value, while SDM Vol. 2B NEG defines them from the result, lock or not.
        # tests/emu/test_regressions.py checks emu's `lock neg` against Unicorn's plain `neg`.
        return Spec(mnemonic, (b.rm(_w(b)),))
    return _lockable(b, mnemonic, (b.rm(_w(b)),))


def f_shift(b: Builder, mnemonic: str) -> Spec:
    w = _w(b)
    form = b.draw(_pick(("one", "imm", "cl")))
    count = {"one": lambda: Imm(1, 1), "imm": b.count, "cl": lambda: Reg("cl")}[form]()
    return Spec(mnemonic, (b.rm(w), count))


def f_imul(b: Builder) -> Spec:
    form = b.draw(_pick(("one", "two", "three", "three8")))
    if form == "one":
        return Spec("imul", (b.rm(_w(b)),))
    w = _w(b, (2, 4, 8))
    if form == "two":
        return Spec("imul", (b.reg(w), b.rm(w)))
    return Spec("imul", (b.reg(w), b.rm(w), b.imm8(w) if form == "three8" else b.imm(w)))


def f_mul(b: Builder) -> Spec:
    return Spec("mul", (b.rm(_w(b)),))


def f_cmov(b: Builder) -> Spec:
    w = _w(b, (2, 4, 8))
    return Spec("cmov" + b.draw(_pick(CONDITIONS)), (b.reg(w), b.rm(w)))


def f_set(b: Builder) -> Spec:
    return Spec("set" + b.draw(_pick(CONDITIONS)), (b.rm(1),))


def f_bt(b: Builder) -> Spec:
    w = _w(b, (2, 4, 8))
    mnemonic = b.draw(_pick(("bt", "bts", "btr")))
    src = b.reg(w) if b.draw(_BOOLS) else b.count()
    return Spec(mnemonic, (b.reg(w), src))


def f_jmp(b: Builder) -> Spec:
    form = b.draw(_pick(("rel8", "rel32", "r64", "m64")))
    if form in ("rel8", "rel32"):
        return Spec("jmp", (b.target(form == "rel8"),))
    return Spec("jmp", (b.reg(8) if form == "r64" else b.mem(8),))


def f_jcc(b: Builder) -> Spec:
    return Spec("j" + b.draw(_pick(CONDITIONS)), (b.target(b.draw(_BOOLS)),))


def f_jrcxz(b: Builder) -> Spec:
    mnemonic = b.draw(_pick(("jrcxz", "jecxz", "loop", "loope", "loopne")))
    return Spec(mnemonic, (b.target(True),))


def f_call(b: Builder) -> Spec:
    form = b.draw(_pick(("rel32", "r64", "m64", "rip")))
    if form == "rel32":
        return Spec("call", (b.target(False),))
    if form == "r64":
        return Spec("call", (b.reg(8),))
    m = b.mem(8)
    return Spec("call", (replace(m, rip=True, base=None, index=None) if form == "rip" else m,))


def f_jmp_rip(b: Builder) -> Spec:
    return Spec("jmp", (replace(b.mem(8), rip=True, base=None, index=None, seg=None),))


def f_ret(b: Builder) -> Spec:
    if b.draw(_BOOLS):
        return Spec("ret")
    # imm16 below 0x8000 only: Unicorn sign-extends RET's imm16 (0x8000 releases -32 KiB),
    # while SDM Vol. 2B RET adds it as an unsigned count of bytes to release.
    # tests/emu/test_regressions.py checks emu on the upper half against the SDM.
    return Spec("ret", (Imm(b.draw(_either(_ints(0, 64), _ints(0, 0x7FFF))), 2),))


def f_nop_hint(b: Builder) -> Spec:
    """`nop r/m` as keystone encodes it: 0F 18 /4../7, the reserved-NOP hint space."""
    w = _w(b, (2, 4))
    return Spec("nop", (b.rm(w),))


# ---- SSE moves (emu/semantics/vector.py). Registers are drawn as full 128-bit values for these
# families (register_state). Unicorn does NOT raise #GP for a misaligned movdqa/movaps/movapd or a
# legacy-SSE pxor/xorps/xorpd memory operand (the CPU does: SDM Vol. 2B MOVDQA "#GP(0) If a memory
# operand is not aligned on a 16-byte boundary"; confirmed by the native oracle), so those
# families aim only at 16-byte-aligned addresses (ALIGNED_FAMILIES, enforced in `cases`);
# tests/emu/test_regressions.py checks the misaligned #GP against the SDM on its own.


def f_sse_movd(b: Builder) -> Spec:
    """movd/movq between xmm and a general register or memory, and movq xmm, xmm."""
    form = b.draw(_pick(("x_r", "r_x", "x_m", "m_x", "x_x")))
    if form == "x_x":
        return Spec("movq", (b.xmm(), b.xmm()))
    w = _w(b, (4, 8))
    mnemonic = "movd" if w == 4 else "movq"
    other = b.reg(w) if form in ("x_r", "r_x") else b.mem(w)
    return Spec(mnemonic, (b.xmm(), other) if form in ("x_r", "x_m") else (other, b.xmm()))


def f_sse_scalar(b: Builder) -> Spec:
    """movss/movsd: merge between registers, zero-extend on a load, low part on a store."""
    mnemonic = b.draw(_pick(("movss", "movsd")))
    w = 4 if mnemonic == "movss" else 8
    form = b.draw(_pick(("x_x", "x_m", "m_x")))
    if form == "x_x":
        return Spec(mnemonic, (b.xmm(), b.xmm()))
    if form == "x_m":
        return Spec(mnemonic, (b.xmm(), b.mem(w)))
    return Spec(mnemonic, (b.mem(w), b.xmm()))


def f_sse_move128(b: Builder, mnemonics: tuple[str, ...], align: int) -> Spec:
    """The full 128-bit moves: xmm <- xmm, xmm <- m128, m128 <- xmm."""
    mnemonic = b.draw(_pick(mnemonics))
    form = b.draw(_pick(("x_x", "x_m", "m_x")))
    if form == "x_x":
        return Spec(mnemonic, (b.xmm(), b.xmm()))
    if form == "x_m":
        return Spec(mnemonic, (b.xmm(), b.mem(16, align=align)))
    return Spec(mnemonic, (b.mem(16, align=align), b.xmm()))


def f_sse_xor(b: Builder) -> Spec:
    """pxor/xorps/xorpd xmm, xmm/m128 (including the `pxor xmm, xmm` zeroing idiom)."""
    mnemonic = b.draw(_pick(("pxor", "xorps", "xorpd")))
    dst = b.xmm()
    form = b.draw(_pick(("x_x", "same", "x_m")))
    src = {"x_x": b.xmm, "same": lambda: dst, "x_m": lambda: b.mem(16, align=16)}[form]()
    return Spec(mnemonic, (dst, src))


def _fixed(*mnemonics: str) -> Callable[[Builder], Spec]:
    def build(b: Builder) -> Spec:
        return Spec(b.draw(_pick(mnemonics)))
    return build


#: family name -> operand builder. Names follow the project's list of probe-site families; `nop` and `endbr64` come from
#: GNU as (see GAS_TEXTS) and are handled in `cases`.
FAMILIES: dict[str, Callable[[Builder], Spec] | None] = {
    "nop": None,
    "nop_hint": f_nop_hint,
    "mov": f_mov,
    "movzx": f_movzx,
    "movsx": functools.partial(f_movzx, mnemonic="movsx"),
    "movsxd": f_movsxd,
    "lea": f_lea,
    "push": f_push,
    "pop": f_pop,
    "xchg": f_xchg,
    **{m: functools.partial(f_alu, mnemonic=m) for m in ("add", "adc", "sub", "sbb", "and", "or", "xor", "cmp")},
    "test": f_test,
    **{m: functools.partial(f_unary, mnemonic=m) for m in ("inc", "dec", "neg", "not")},
    **{m: functools.partial(f_shift, mnemonic=m) for m in ("shl", "sal", "shr", "sar", "rol", "ror")},
    "imul": f_imul,
    "mul": f_mul,
    "convert": _fixed("cdqe", "cdq", "cqo", "cwde"),
    "cmovcc": f_cmov,
    "setcc": f_set,
    "bt": f_bt,
    "leave": _fixed("leave"),
    "pushf_popf": _fixed("pushfq", "popfq"),
    "flags": _fixed("sahf", "lahf", "clc", "stc", "cmc", "cld", "std"),
    "jmp": f_jmp,
    "jmp_rip": f_jmp_rip,
    "jcc": f_jcc,
    "jrcxz_loop": f_jrcxz,
    "call": f_call,
    "ret": f_ret,
    "sse_movd": f_sse_movd,
    "sse_scalar": f_sse_scalar,
    "sse_aligned": functools.partial(f_sse_move128, mnemonics=("movdqa", "movaps", "movapd"), align=16),
    "sse_unaligned": functools.partial(f_sse_move128, mnemonics=("movdqu", "movups", "movupd"), align=1),
    "sse_xor": f_sse_xor,
}

#: families whose memory operands must be 16-byte aligned in the Unicorn comparison (see above)
ALIGNED_FAMILIES = frozenset({"sse_aligned", "sse_xor"})
