"""stepper.xol_area on a real tracee in a ptrace stop (no engine): the syscall gadget, a
syscall injected with every register restored, and the area mapped, handed out in slots,
loaded and unmapped, as /proc/PID/maps and /proc/PID/mem show."""

from __future__ import annotations

import os

import pytest

from stepper import maps, kernel, xol_area
from stepper.errors import StepperError

SYS_GETPID = 39


@pytest.fixture
def tracee(stopped_tracee):
    pid, exe = stopped_tracee
    mem = kernel.ProcMem(pid)
    yield pid, exe, mem
    mem.close()


def regs_of(pid: int) -> list[int]:
    buf = kernel.new_regs()
    kernel.getregs(pid, buf)
    return list(buf)


def test_gadget_is_a_syscall_outside_the_program(tracee):
    pid, exe, mem = tracee
    gadget = xol_area.find_syscall_gadget(pid, mem)
    assert gadget is not None and mem.read(gadget, 2) == b"\x0f\x05"
    at = maps.find(maps.read(pid), gadget)
    assert at.executable and at.path != exe


def test_injected_syscall_returns_its_result_and_restores_every_register(tracee):
    pid, _, mem = tracee
    before = regs_of(pid)
    gadget = xol_area.find_syscall_gadget(pid, mem)
    assert xol_area.inject_syscall(pid, mem, gadget, SYS_GETPID) == pid
    assert regs_of(pid) == before


def test_area_mapped_near_the_executable_slots_loaded_and_unmapped(tracee):
    pid, exe, mem = tracee
    before = regs_of(pid)
    area = xol_area.XolArea(pid, exe, mem)
    address = area.map(pid)
    assert area.mapped and area.map(pid) == address  # mapped once
    mapping = maps.find(maps.read(pid), address)
    assert (mapping.start, mapping.end) == (address, address + xol_area.AREA_SIZE)
    assert mapping.perms == "r-xp" and mapping.path == ""
    lowest = min(m.start for m in maps.of_file(maps.read(pid), os.path.realpath(exe)))
    assert address + xol_area.AREA_SIZE <= lowest and lowest - address < 1 << 31
    assert regs_of(pid) == before

    first, second = area.slot(1), area.slot(2)
    assert first != second and area.slot(1) == first  # a thread keeps its slot
    assert address <= first < address + xol_area.AREA_SIZE and first % area.slot_size == 0
    area.load(first, b"\x90\x90\xcc")
    assert mem.read(first, 3) == b"\x90\x90\xcc"  # written although the page is r-x
    with pytest.raises(StepperError, match="exceeds a slot"):
        area.load(second, bytes(area.slot_size + 1))
    area.release(1)
    assert area.slot(3) == first  # given back, handed out again
    reserved = area.reserve()
    assert reserved not in (first, second)

    child = area.inherited(pid + 1, mem)  # fork: same area, the parent's threads are not its
    assert child.address == address and child.pid == pid + 1
    handed = set()
    while True:
        try:
            handed.add(child.slot(1000 + len(handed)))
        except StepperError:
            break
    assert {first, second} <= handed and reserved not in handed
    assert len(handed) == xol_area.AREA_SIZE // area.slot_size - 1
    assert area.slot(2) == second  # the parent's threads keep theirs

    area.unmap(pid)
    assert not area.mapped and maps.find(maps.read(pid), address) is None
    assert regs_of(pid) == before


def test_a_full_area_says_so(tracee):
    pid, exe, mem = tracee
    area = xol_area.XolArea(pid, exe, mem, slot_size=xol_area.AREA_SIZE // 2)
    area.map(pid)
    area.slot(1)
    area.reserve()
    with pytest.raises(StepperError, match="XOL area full"):
        area.slot(2)
    with pytest.raises(StepperError, match="XOL area full"):
        area.reserve()
    area.unmap(pid)
