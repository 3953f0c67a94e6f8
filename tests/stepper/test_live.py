"""The live-thread State: page protections are honoured (an access the CPU would fault on
raises emu.MemoryFault) and a failing write, even one that spans pages, changes nothing."""

from __future__ import annotations

import os
import signal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import emu
from stepper import maps, kernel
from stepper.live import LiveState

PAGE = 4096


@pytest.fixture(scope="module")
def stopped_layout(build, tmp_path_factory):
    """A tracee stopped (SIGSTOP) with pages rw / r / none at `base`; yields (state, mem, base)."""
    from stepper.session import Session

    out = tmp_path_factory.mktemp("layout") / "stdout"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT, 0o644)
    saved = os.dup(1)
    try:
        os.dup2(fd, 1)
        session = Session.spawn([build("layout")])
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(fd)
    pid = session.pid
    kernel.cont(pid)
    _, status = os.waitpid(pid, kernel.WALL)
    assert os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGSTOP
    base = int(out.read_text(), 16)
    thread = session.threads[pid]
    kernel.getregs(pid, thread.regs)
    yield thread.live, session.mem, base
    session.kill()


def test_regs_are_the_ptrace_buffer(stopped_layout):
    state, _, _ = stopped_layout
    assert isinstance(state, LiveState)
    assert state.regs[kernel.REG_INDEX["rsp"]] % 8 == 0
    assert set(kernel.REG_INDEX) == set(emu.REGISTER_NAMES)


def test_protections(stopped_layout):
    state, _, base = stopped_layout
    assert state.read(base + PAGE, 8) == bytes((i * 7) & 0xFF for i in range(PAGE, PAGE + 8))
    with pytest.raises(emu.MemoryFault):
        state.read(base + 2 * PAGE, 1)  # PROT_NONE
    with pytest.raises(emu.MemoryFault):
        state.write(base + PAGE, b"x")  # read-only
    state.write(base + 5, b"ok")
    assert state.read(base + 5, 2) == b"ok"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offset=st.integers(-40, 40), data=st.binary(min_size=1, max_size=48))
def test_a_failing_write_changes_nothing(stopped_layout, offset, data):
    state, mem, base = stopped_layout
    address = base + PAGE + offset
    before = mem.read(base, 2 * PAGE)
    if offset + len(data) <= 0:
        state.write(address, data)
        assert state.read(address, len(data)) == data
    else:
        with pytest.raises(emu.MemoryFault) as excinfo:
            state.write(address, data)
        assert excinfo.value.access == "write"
        assert mem.read(base, 2 * PAGE) == before


def test_maps_parse_round_trip():
    mappings = maps.read(os.getpid())
    assert mappings == sorted(mappings, key=lambda m: m.start)
    assert maps.parse("00400000-00401000 r-xp 00001000 08:01 42   /bin/x y\n") == [
        maps.Mapping(0x400000, 0x401000, "r-xp", 0x1000, "/bin/x y")]
    assert maps.find(maps.parse("1000-2000 rw-p 0 0:0 0\n"), 0x2000) is None
