"""The direct register batch moves each register to and from the engine in its own slot."""

from __future__ import annotations

from unicorn import UC_ARCH_X86, UC_MODE_64, Uc
from unicorn import x86_const as U

from emu.state import REGISTER_NAMES
from emu.testing.unicorn_batch import RegisterBatch

IDS = [getattr(U, f"UC_X86_REG_{name.upper()}") for name in REGISTER_NAMES]


def _values() -> list[int]:
    values = [(0x0123456789ABCDEF * (n + 1)) & (2**64 - 1) for n in range(len(IDS))]
    values[REGISTER_NAMES.index("rflags")] = 0x2C3  # a value the flags register keeps whole
    values[REGISTER_NAMES.index("rip")] = 0x401000
    values[REGISTER_NAMES.index("fs_base")] = 0x7F0000001000
    values[REGISTER_NAMES.index("gs_base")] = 0x7F0000002000
    return values


def test_a_batch_write_is_what_the_binding_reads_one_by_one():
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    RegisterBatch(uc, IDS).write(_values())
    assert [uc.reg_read(i) for i in IDS] == _values()


def test_a_batch_read_is_what_the_binding_wrote_one_by_one():
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    for i, value in zip(IDS, _values()):
        uc.reg_write(i, value)
    assert RegisterBatch(uc, IDS).read() == _values()


XMM_IDS = [getattr(U, f"UC_X86_REG_XMM{n}") for n in range(16)]
XMM_VALUES = [(0x0123456789ABCDEF_FEDCBA9876543210 * (n + 3)) & (2**128 - 1) for n in range(16)]


def test_sixteen_byte_registers_keep_both_halves():
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    RegisterBatch(uc, XMM_IDS, width=16).write(XMM_VALUES)
    assert [uc.reg_read(i) for i in XMM_IDS] == XMM_VALUES
    uc.reg_write(XMM_IDS[5], 2**128 - 2)
    assert RegisterBatch(uc, XMM_IDS, width=16).read()[5] == 2**128 - 2
