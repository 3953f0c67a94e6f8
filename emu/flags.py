"""RFLAGS: the bits, the condition codes, and the arithmetic flag families.

Each family computes CF PF AF ZF SF OF together, the way the SDM defines them for that kind
of operation (QEMU's compute_all_* shape). The result is the six status bits, to be merged
into rflags with `STATUS`.
"""

from __future__ import annotations

CF, PF, AF, ZF, SF, TF, IF, DF, OF = 0x1, 0x4, 0x10, 0x40, 0x80, 0x100, 0x200, 0x400, 0x800
NT, RF, AC, ID = 0x4000, 0x10000, 0x40000, 0x200000
STATUS = CF | PF | AF | ZF | SF | OF
KEEP = ~STATUS & ((1 << 64) - 1)

#: PF for every low byte of a result: set when the byte has an even number of one bits.
PARITY = tuple(0 if bin(b).count("1") & 1 else PF for b in range(256))

#: Flags POPF may change at CPL 3 with IOPL 0: IF, IOPL, VM, VIF, VIP are left alone and
#: RF is cleared (SDM Vol. 2B, POPF).
POPF_USER_MASK = CF | PF | AF | ZF | SF | TF | DF | OF | NT | AC | ID


from functools import lru_cache


@lru_cache(maxsize=None)
def adder(bits: int):
    """add(a, b, carry_in) -> (result, status flags) on `bits`-wide operands (ADD ADC INC).

    Specialised per width once, because this runs on every emulated add: the constants are
    bound at creation and the six flags come out of one expression.
    """
    mask, sign_to_sf, sign_to_bit0 = (1 << bits) - 1, bits - 8, bits - 1

    def add(a: int, b: int, carry_in: int) -> tuple[int, int]:
        full = a + b + carry_in
        r = full & mask
        return r, ((full >> bits) & 1) | PARITY[r & 0xFF] | ((a ^ b ^ r) & AF) | (
            0 if r else ZF) | ((r >> sign_to_sf) & SF) | (
            ((((a ^ r) & (b ^ r)) >> sign_to_bit0) & 1) << 11)
    return add


@lru_cache(maxsize=None)
def subtractor(bits: int):
    """sub(a, b, borrow_in) -> (result, status flags) (SUB SBB CMP DEC NEG)."""
    mask, sign_to_sf, sign_to_bit0 = (1 << bits) - 1, bits - 8, bits - 1

    def sub(a: int, b: int, borrow_in: int) -> tuple[int, int]:
        r = (a - b - borrow_in) & mask
        return r, (1 if a < b + borrow_in else 0) | PARITY[r & 0xFF] | ((a ^ b ^ r) & AF) | (
            0 if r else ZF) | ((r >> sign_to_sf) & SF) | (
            ((((a ^ b) & (a ^ r)) >> sign_to_bit0) & 1) << 11)
    return sub


def add(a: int, b: int, carry_in: int, bits: int) -> tuple[int, int]:
    """(result, flags) of a + b + carry_in on `bits`-wide operands."""
    return adder(bits)(a, b, carry_in)


def sub(a: int, b: int, borrow_in: int, bits: int) -> tuple[int, int]:
    """(result, flags) of a - b - borrow_in on `bits`-wide operands."""
    return subtractor(bits)(a, b, borrow_in)


def result(r: int, bits: int) -> int:
    """PF, ZF and SF of a result (also all that AND, OR, XOR, TEST set: CF = OF = 0, and the
    undefined AF cleared as the CPU does)."""
    return PARITY[r & 0xFF] | (0 if r else ZF) | ((r >> (bits - 8)) & SF)


logic = result


# Condition codes, indexed by the low nibble of the Jcc/SETcc/CMOVcc opcode (SDM Table B-1).
def _cond(f: int) -> tuple[bool, ...]:
    cf, zf, sf, of, pf = bool(f & CF), bool(f & ZF), bool(f & SF), bool(f & OF), bool(f & PF)
    return (of, not of, cf, not cf, zf, not zf, cf or zf, not (cf or zf),
            sf, not sf, pf, not pf, sf != of, sf == of, zf or sf != of, not zf and sf == of)


#: CONDITION[cc][flags & (CF|PF|ZF|SF|OF)] -> taken; precomputed over the 32 combinations
#: of the five flags any condition reads, so a conditional costs one tuple index.
_COND_BITS = CF | PF | ZF | SF | OF
_CONDS = [_cond(f) for f in range(_COND_BITS + 1)]   # each combination once (import time)
CONDITION_TABLE = tuple(tuple(row[cc] for row in _CONDS) for cc in range(16))
del _CONDS
CONDITION_MASK = _COND_BITS

#: capstone mnemonic suffix -> condition code number
CONDITION_CODES = {
    "o": 0, "no": 1, "b": 2, "ae": 3, "e": 4, "ne": 5, "be": 6, "a": 7,
    "s": 8, "ns": 9, "p": 10, "np": 11, "l": 12, "ge": 13, "le": 14, "g": 15,
}
