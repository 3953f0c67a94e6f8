"""The traced process (stepper.process): per-process state on a real tracee stopped at its
exec. The boost registry exists from the start with nothing mapped; the XOL area is mapped
on first need only; breakpoint bytes are hidden from reads; threads are kept in the process
and in the family map shared by the tree."""

from __future__ import annotations

from tests.support.elf import symbol
from stepper import maps
from stepper.process import TracedProcess


def test_areas_are_mapped_only_on_need(build, spawn_captured):
    exe = build("execer")
    proc, _ = spawn_captured([exe])
    s = proc._session
    assert isinstance(s, TracedProcess)
    assert s.boost.areas == [] and s.area is None  # the registry, nothing mapped
    before = {m.start for m in maps.read(s.pid)}
    t = s.threads[s.pid]
    area = s.xol_area(t)
    assert area.mapped and s.area is area and s.xol_area(t) is area
    assert {m.start for m in maps.read(s.pid)} - before == {area.address}


def test_reads_hide_breakpoint_bytes(build, spawn_captured):
    exe = build("execer")
    proc, _ = spawn_captured([exe])
    s = proc._session
    address = s.load_bias + symbol(exe, "f")[0]
    original = s.read_memory(address, 4)
    bp = s.add_breakpoint(address, "emulate")
    assert s.mem.read(address, 1) == b"\xcc" and s.read_memory(address, 4) == original
    s.remove_breakpoint(bp)
    assert s.mem.read(address, 4) == original and list(s.breakpoints) == []


def test_threads_are_kept_in_the_process_and_the_family(build, spawn_captured):
    proc, _ = spawn_captured([build("execer")])
    s = proc._session
    assert s.tree() == [s] and s.root is s and s.threads_seen == 1
    t = s.add_thread(123456789, fresh=True)
    assert (t.running, t.fresh, t.session) == (True, True, s)
    assert s.family[123456789] is t and s.threads_seen == 2
    assert not s.cloned(123456789)  # known already
    s.drop_thread(123456789)
    assert 123456789 not in s.threads and 123456789 not in s.family
