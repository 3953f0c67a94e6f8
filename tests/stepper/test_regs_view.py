"""A thread's registers by name (stepper.regs_view): parts of registers read and written as
the CPU does, over a ptrace buffer (no tracee needed for the general registers)."""

import pytest

from stepper import kernel
from stepper.errors import StepperError
from stepper.regs_view import Registers


def _regs():
    return Registers(0, kernel.new_regs())


def test_parts_read_their_bits():
    r = _regs()
    r["rax"] = 0x1122334455667788
    assert (r["eax"], r["ax"], r["al"], r["ah"]) == (0x55667788, 0x7788, 0x88, 0x77)
    r["r9"] = 0xFFFF_0000_1234_ABCD
    assert (r["r9d"], r["r9w"], r["r9b"]) == (0x1234ABCD, 0xABCD, 0xCD)


def test_a_32_bit_write_zero_extends_and_a_narrow_one_merges():
    r = _regs()
    r["rbx"] = 0xFFFF_FFFF_FFFF_FFFF
    r["bl"] = 0
    assert r["rbx"] == 0xFFFF_FFFF_FFFF_FF00
    r["bh"] = 0x12
    assert r["rbx"] == 0xFFFF_FFFF_FFFF_1200
    r["ebx"] = 7
    assert r["rbx"] == 7
    assert r.dirty


def test_writes_wrap_to_64_bits_and_unknown_names_are_refused():
    r = _regs()
    r["rdi"] = -1
    assert r["rdi"] == (1 << 64) - 1
    with pytest.raises(StepperError):
        r["nosuch"] = 1
    with pytest.raises(KeyError):
        r["nosuch"]
    assert "xmm15" in list(r) and "rip" in list(r)
