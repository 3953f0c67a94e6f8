"""emu.flags: the arithmetic flag families and the condition table, against the SDM's
definitions of each flag written out independently here (signed overflow from signed
arithmetic, parity by counting bits, conditions by their SDM names)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emu import flags
from emu.flags import AF, CF, OF, PF, SF, ZF

WIDTHS = st.sampled_from([8, 16, 32, 64])


def signed(x: int, bits: int) -> int:
    return x - (1 << bits) if x >> (bits - 1) else x


def expected_status(r: int, bits: int, carry: bool, overflow: bool, a: int, b: int) -> int:
    f = CF if carry else 0
    f |= PF if bin(r & 0xFF).count("1") % 2 == 0 else 0
    f |= AF if (a ^ b ^ r) & 0x10 else 0
    f |= ZF if r == 0 else 0
    f |= SF if r >> (bits - 1) else 0
    return f | (OF if overflow else 0)


@st.composite
def operands(draw):
    bits = draw(WIDTHS)
    top = (1 << bits) - 1
    return bits, draw(st.integers(0, top)), draw(st.integers(0, top)), draw(st.integers(0, 1))


@given(operands())
def test_add_sets_the_six_flags_as_defined(case):
    bits, a, b, c = case
    r, f = flags.add(a, b, c, bits)
    assert r == (a + b + c) % (1 << bits)
    s = signed(a, bits) + signed(b, bits) + c
    overflow = not -(1 << (bits - 1)) <= s < (1 << (bits - 1))
    assert f == expected_status(r, bits, a + b + c >= 1 << bits, overflow, a, b)


@given(operands())
def test_sub_sets_the_six_flags_as_defined(case):
    bits, a, b, c = case
    r, f = flags.sub(a, b, c, bits)
    assert r == (a - b - c) % (1 << bits)
    s = signed(a, bits) - signed(b, bits) - c
    overflow = not -(1 << (bits - 1)) <= s < (1 << (bits - 1))
    assert f == expected_status(r, bits, a < b + c, overflow, a, b)


@given(WIDTHS, st.data())
def test_result_flags_are_pf_zf_sf_only(bits, data):
    r = data.draw(st.integers(0, (1 << bits) - 1))
    f = flags.result(r, bits)
    assert f & (CF | OF | AF) == 0
    assert f == expected_status(r, bits, False, False, 0, r) & ~AF


@pytest.mark.parametrize("a, b, bits, want", [
    (0x7F, 1, 8, OF | SF | AF),              # 127 + 1: signed overflow, not unsigned
    (0xFF, 1, 8, CF | ZF | PF | AF),         # 255 + 1: carry out, zero
    (0xFFFF_FFFF_FFFF_FFFF, 1, 64, CF | ZF | PF | AF),
])
def test_add_sdm_examples(a, b, bits, want):
    assert flags.add(a, b, 0, bits)[1] == want


def test_condition_table_matches_the_sdm_names():
    """Every condition code over all 32 combinations of the flags conditions read."""
    definitions = {
        "o": lambda c, z, s, o, p: o, "no": lambda c, z, s, o, p: not o,
        "b": lambda c, z, s, o, p: c, "ae": lambda c, z, s, o, p: not c,
        "e": lambda c, z, s, o, p: z, "ne": lambda c, z, s, o, p: not z,
        "be": lambda c, z, s, o, p: c or z, "a": lambda c, z, s, o, p: not c and not z,
        "s": lambda c, z, s, o, p: s, "ns": lambda c, z, s, o, p: not s,
        "p": lambda c, z, s, o, p: p, "np": lambda c, z, s, o, p: not p,
        "l": lambda c, z, s, o, p: s != o, "ge": lambda c, z, s, o, p: s == o,
        "le": lambda c, z, s, o, p: z or s != o, "g": lambda c, z, s, o, p: not z and s == o,
    }
    assert set(definitions) == set(flags.CONDITION_CODES)
    for name, cc in flags.CONDITION_CODES.items():
        for f in range(flags.CONDITION_MASK + 1):
            want = definitions[name](bool(f & CF), bool(f & ZF), bool(f & SF), bool(f & OF),
                                     bool(f & PF))
            assert flags.CONDITION_TABLE[cc][f] == want, (name, hex(f))


def test_popf_mask_leaves_system_flags_alone():
    for bit in (flags.IF, flags.RF, 0x3000, 0x20000, 0x80000, 0x100000):  # IF RF IOPL VM VIF VIP
        assert not flags.POPF_USER_MASK & bit
    assert flags.STATUS == CF | PF | AF | ZF | SF | OF
    assert flags.KEEP & flags.STATUS == 0 and flags.KEEP | flags.STATUS == (1 << 64) - 1
