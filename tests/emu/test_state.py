"""emu.state.FlatState: the reference State the emulator's tests run on. Accesses inside one
region work, anything else faults (also across two adjacent regions), read-only regions
refuse writes and keep their bytes, copies are independent."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

import emu
from emu.state import REGISTER_NAMES, VECTOR_REGISTERS, FlatState

BASE, SIZE = 0x10000, 0x100


def test_registers_start_at_zero_with_if_set():
    state = FlatState({"rax": 5})
    assert set(state.regs) == set(REGISTER_NAMES + VECTOR_REGISTERS)
    assert state.regs["rax"] == 5 and state.regs["rflags"] == 0x202 and state.regs["xmm15"] == 0


def test_unknown_register_is_refused():
    with pytest.raises(KeyError, match="eflags"):
        FlatState({"eflags": 0})


@pytest.mark.parametrize("address, size", [(BASE - 4, 8), (BASE + SIZE - 4, 8), (BASE + 0x80, 0x100), (BASE - 8, 0x200)])
def test_overlapping_regions_are_refused(address, size):
    state = FlatState()
    state.map(BASE, bytes(SIZE))
    with pytest.raises(ValueError, match="overlaps"):
        state.map(address, bytes(size))
    assert state.regions() == [(BASE, bytes(SIZE), True)]


@given(offset=st.integers(0, SIZE - 1), data=st.binary(min_size=1, max_size=32))
def test_write_then_read_inside_a_region(offset, data):
    state = FlatState()
    state.map(BASE, bytes(SIZE))
    if offset + len(data) > SIZE:
        with pytest.raises(emu.MemoryFault) as info:
            state.write(BASE + offset, data)
        assert (info.value.address, info.value.size, info.value.access) == (
            BASE + offset, len(data), "write")
        assert state.read(BASE, SIZE) == bytes(SIZE)  # nothing written
    else:
        state.write(BASE + offset, data)
        assert state.read(BASE + offset, len(data)) == data
        expected = bytes(offset) + data + bytes(SIZE - offset - len(data))
        assert state.regions() == [(BASE, expected, True)]


def test_adjacent_regions_do_not_merge():
    state = FlatState()
    state.map(BASE + SIZE, b"\x22" * SIZE)
    state.map(BASE, b"\x11" * SIZE)
    assert [r[0] for r in state.regions()] == [BASE, BASE + SIZE]  # address order
    assert state.read(BASE + SIZE - 1, 1) == b"\x11" and state.read(BASE + SIZE, 1) == b"\x22"
    with pytest.raises(emu.MemoryFault):
        state.read(BASE + SIZE - 2, 4)


def test_read_only_region_refuses_writes():
    state = FlatState()
    state.map(BASE, b"\xaa" * SIZE, writable=False)
    assert state.read(BASE, 2) == b"\xaa\xaa"
    with pytest.raises(emu.MemoryFault) as info:
        state.write(BASE, b"\x00")
    assert info.value.access == "write"
    assert state.read(BASE, SIZE) == b"\xaa" * SIZE


def test_copy_is_independent():
    state = FlatState({"rbx": 1})
    state.map(BASE, bytes(SIZE))
    other = state.copy()
    other.regs["rbx"] = 2
    other.write(BASE, b"\x01")
    assert state.regs["rbx"] == 1 and state.read(BASE, 1) == b"\x00"
    assert other.regs["rbx"] == 2 and other.read(BASE, 1) == b"\x01"
    state.write(BASE + 1, b"\x02")
    assert other.read(BASE + 1, 1) == b"\x00"
