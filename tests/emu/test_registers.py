"""emu.registers: every general register name capstone knows maps to the right 64-bit
register, size and shift, checked against the x86 naming rules written out here."""

import re

import capstone
import pytest
from capstone import x86_const as X

from emu.registers import FLAT_SEGMENTS, GPR, SEGMENT_BASES, XMM

_cs = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
LEGACY = {"a": "rax", "b": "rbx", "c": "rcx", "d": "rdx"}
INDEX = {"si": "rsi", "di": "rdi", "bp": "rbp", "sp": "rsp"}


def by_name(name: str) -> tuple[str, int, int]:
    """(64-bit register, size, shift) derived from the name alone."""
    if m := re.fullmatch(r"r(\d+)([dwb]?)", name):
        return f"r{m[1]}", {"": 8, "d": 4, "w": 2, "b": 1}[m[2]], 0
    if m := re.fullmatch(r"([re]?)([abcd])([xhl])", name):
        size = {"r": 8, "e": 4, "": 2}[m[1]] if m[3] == "x" else 1
        return LEGACY[m[2]], size, 8 if m[3] == "h" else 0
    if m := re.fullmatch(r"([re]?)(si|di|bp|sp)(l?)", name):
        return INDEX[m[2]], 1 if m[3] else {"r": 8, "e": 4, "": 2}[m[1]], 0
    if name in ("rip", "eip"):
        return "rip", 8 if name == "rip" else 4, 0
    raise AssertionError(f"unexpected register name {name}")


def test_every_entry_agrees_with_its_name():
    for reg_id, entry in GPR.items():
        assert entry == by_name(_cs.reg_name(reg_id)), _cs.reg_name(reg_id)


def test_every_general_register_view_is_present():
    names = {_cs.reg_name(reg_id) for reg_id in GPR}
    assert len(names) == 16 * 4 + 4 + 2  # four views each, ah..dh, rip and eip
    for n in range(8, 16):
        assert {f"r{n}", f"r{n}d", f"r{n}w", f"r{n}b"} <= names
    assert {"ah", "bh", "ch", "dh", "sil", "dil", "bpl", "spl"} <= names


@pytest.mark.parametrize("n", range(16))
def test_xmm_registers(n):
    assert XMM[getattr(X, f"X86_REG_XMM{n}")] == f"xmm{n}"


def test_segments():
    assert SEGMENT_BASES == {X.X86_REG_FS: "fs_base", X.X86_REG_GS: "gs_base"}
    assert not set(SEGMENT_BASES) & FLAT_SEGMENTS
