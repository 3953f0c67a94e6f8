"""stepper.watchpoints through the library (proc.watch): hardware watchpoints on real tracees.
The tracee (tracees/watchpoints.c) prints what it did; every count is checked against it.

Covered: a global written by two threads created after the watch (every write seen, old and
new values chained), threads that exist already (attach), "rw" seeing the read, "x" on a function alone and with a breakpoint of
every strategy on the same instruction or on the one-byte instruction just before it, a
breakpoint emulating a store into the watched global (the store must go to the CPU), the
program's own SIGTRAP passed through, unwatch, the errors, and the detach."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support.elf import symbol
from tests.support.runs import ended, run_plain, wait_with_deadline
from stepper import api
from stepper.errors import StepperError


def addr(proc, exe: str, name: str) -> int:
    return proc.load_bias + symbol(exe, name)[0]


def watch_or_skip(proc, *args, **kwargs):
    """proc.watch, or skip where the kernel refuses debug registers (some virtual machines)."""
    try:
        return proc.watch(*args, **kwargs)
    except StepperError as e:
        if "may not offer hardware watchpoints" in str(e):
            proc.kill()
            pytest.skip(str(e))
        raise


def test_a_global_written_by_two_threads_reports_every_write(build, spawn_captured):
    exe = build("watchpoints")
    proc, out = spawn_captured([exe, "threads", "2", "2000"])
    hits = []
    worker, size = symbol(exe, "worker")
    start = proc.load_bias + worker
    # Set while only the main thread exists: both writers are created afterwards.
    wp = watch_or_skip(proc, addr(proc, exe, "counter"), 8, "w", callback=hits.append)
    status = proc.run()
    assert status.exit_code == 0
    assert out.read_bytes() == b"writes=4000 counter=4000\n"
    assert wp.hits == len(hits) == 4000
    # Each write happens under a mutex that the stopped writer still holds: the value read
    # at its hit is its own write, one more than the value seen at the previous hit.
    assert [(h.old_value, h.new_value) for h in hits] == [(n, n + 1) for n in range(4000)]
    assert len({h.tid for h in hits}) == 2 and proc.pid not in {h.tid for h in hits}
    assert all(start < h.rip < start + size for h in hits)  # just after the store


def test_threads_created_after_the_watch_get_it_too(build, spawn_captured):
    exe = build("watchpoints")
    proc, out = spawn_captured([exe, "threads", "4", "50"])
    tids = set()
    wp = watch_or_skip(proc, addr(proc, exe, "counter"), 8, "w",
                       callback=lambda hit: tids.add(hit.tid))
    assert proc.run().exit_code == 0
    assert out.read_bytes() == b"writes=200 counter=200\n"
    assert wp.hits == 200
    assert len(tids) == 4 and proc.pid not in tids  # every clone had the slot re-applied


def test_attached_threads_that_exist_already_get_it(build):
    """Attached to a program whose three threads exist and wait: the watchpoint is set in
    each of them (the stores come after, one per thread)."""
    exe = build("watchpoints")
    prog = subprocess.Popen([exe, "waiting", "3"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with ended(prog):
        assert prog.stdout.readline() == b"ready\n"
        proc = api.attach(prog.pid)
        assert proc.threads_seen == 4
        tids = []
        wp = watch_or_skip(proc, addr(proc, exe, "counter"), 8, "w",
                           callback=lambda hit: tids.append(hit.tid))
        prog.stdin.write(b"abc")  # one byte per thread, read once they run again
        prog.stdin.close()
        status = proc.run()
        assert status.exit_code == 0
        out, err = prog.stdout.read(), prog.stderr.read()
        prog.wait(timeout=60)
    assert out == b"writes=3 counter=3\n", err
    assert wp.hits == 3 and len(set(tids)) == 3 and prog.pid not in tids


@pytest.mark.parametrize("access, expected", [("w", 5), ("rw", 6)])
def test_rw_also_sees_the_read(build, spawn_captured, access, expected):
    exe = build("watchpoints")
    proc, out = spawn_captured([exe, "store", "5"])
    hits = []
    site = addr(proc, exe, "store_site")
    wp = watch_or_skip(proc, addr(proc, exe, "counter"), 8, access, callback=hits.append)
    assert proc.run().exit_code == 0
    assert out.read_bytes() == b"writes=5 counter=5\n"
    assert wp.hits == expected
    values = [(h.old_value, h.new_value) for h in hits]
    # Five stores 1..5, then main's read of the final value (rw only): nothing changed.
    assert values == [(n, n + 1) for n in range(5)] + [(5, 5)] * (expected - 5)
    assert all(h.rip == site + 7 for h in hits[:5])  # after `mov [rip+x], rdi` (7 bytes)


@pytest.mark.parametrize("mode", [None, "emulate", "xol", "reinsert"])
def test_execute_watch_on_a_function(build, spawn_captured, mode):
    """An "x" watchpoint traps before the instruction; with one of our INT3s on the same
    instruction both are reported once per call, whatever steps the breakpoint (reinsert
    steps it in place, where the watchpoint traps again: that one is not a new execution)."""
    exe = build("watchpoints")
    proc, out = spawn_captured([exe, "call", "4"])
    fn = addr(proc, exe, "watched_fn")
    rips = []

    def callback(hit):
        rips.append(hit.rip)
        if len(rips) > 100:  # fail fast rather than loop on one instruction
            raise RuntimeError("the execute watchpoint keeps firing")

    wp = watch_or_skip(proc, fn, access="x", callback=callback)
    assert wp.size == 1
    bp = proc.break_at(fn, mode=mode) if mode else None
    assert proc.run().exit_code == 0
    assert out.read_bytes() == b"calls=4 sum=22\n"
    assert wp.hits == 4 and rips == [fn] * 4
    if bp is not None:
        assert bp.stats.hits == 4


def test_execute_watch_right_after_a_one_byte_breakpoint(build, spawn_captured):
    """The trap of an "x" watchpoint at A stops with rip A, as an INT3 at A-1 would: it must
    not be taken for a hit of the breakpoint on the one-byte `push` at A-1 (which would run
    that push twice)."""
    exe = build("watchpoints")
    plain = run_plain([exe, "onebyte", "5"])
    proc, out = spawn_captured([exe, "onebyte", "5"])
    wp = watch_or_skip(proc, addr(proc, exe, "after_one_byte"), access="x")
    bp = proc.break_at(addr(proc, exe, "one_byte_site"), mode="emulate")
    status = proc.run()
    assert (status.exit_code, out.read_bytes()) == (plain.returncode, plain.stdout)
    assert wp.hits == 5 and bp.stats.hits == 5 and bp.stats.emulate == 5


@pytest.mark.parametrize("mode", ["emulate", "auto"])
def test_an_emulated_store_into_watched_memory_runs_on_the_cpu(build, spawn_captured, mode):
    """The emulator writes with process_vm_writev, which the debug registers never see: the
    store must be refused by the emulation and run on the CPU (out of line or boosted)."""
    exe = build("watchpoints")
    proc, out = spawn_captured([exe, "store", "5"])
    hits = []
    wp = watch_or_skip(proc, addr(proc, exe, "counter"), 8, "w", callback=hits.append)
    site = addr(proc, exe, "store_site")
    bp = proc.break_at(site, mode=mode)
    assert bp.strategy == "emulate"
    assert proc.run().exit_code == 0
    assert out.read_bytes() == b"writes=5 counter=5\n"
    assert wp.hits == 5 and bp.stats.hits == 5
    assert bp.stats.fallbacks == {"watched memory": 5} and bp.stats.emulate == 0
    assert [h.new_value for h in hits] == [1, 2, 3, 4, 5]
    assert all(h.rip == site + 7 for h in hits)  # the program's address, not a slot's


def test_without_a_watchpoint_the_store_is_emulated(build, spawn_captured):
    exe = build("watchpoints")
    proc, out = spawn_captured([exe, "store", "5"])
    bp = proc.break_at(addr(proc, exe, "store_site"), mode="emulate")
    assert proc.run().exit_code == 0
    assert bp.stats.emulate == 5 and bp.stats.fallbacks == {}


def test_the_programs_own_sigtrap_is_passed_through(build, spawn_captured):
    exe = build("watchpoints")
    proc, out = spawn_captured([exe, "trap", "6"])
    wp = watch_or_skip(proc, addr(proc, exe, "counter"), 8, "w")
    assert proc.run().exit_code == 0
    # Each raise(SIGTRAP) comes right after a watch trap: DR6 must have been cleared.
    assert out.read_bytes() == b"writes=6 traps=6\n"
    assert wp.hits == 6


@pytest.mark.parametrize("children", ["follow", "detach"])
def test_forked_children_do_not_inherit_watchpoints(build, tmp_path, children):
    """As in gdb, a watchpoint belongs to the process it was set in: the kernel starts a
    child with clear debug registers and stepper sets none there. The child's stores are
    not reported (nor do they kill it); the parent's are."""
    exe = build("watchpoints")
    proc = api.spawn([exe, "fork", "4"], children=children)
    try:
        new_values = []
        wp = watch_or_skip(proc, addr(proc, exe, "counter"), 8, "w",
                           callback=lambda hit: new_values.append(hit.new_value))
        assert proc.run().exit_code == 0
    finally:
        if proc.exit is None:
            proc.kill()
    assert wp.hits == 4 and new_values == [1, 2, 3, 4]
    assert all(child.watchpoints == [] for child in proc.children)
    if children == "follow":
        assert [child.exit.exit_code for child in proc.children] == [0]


def test_unwatch_from_a_callback(build, spawn_captured):
    exe = build("watchpoints")
    proc, out = spawn_captured([exe, "store", "5"])
    seen = []

    def callback(hit):
        seen.append(hit.new_value)
        if len(seen) == 2:
            proc.unwatch(hit.watchpoint)

    wp = watch_or_skip(proc, addr(proc, exe, "counter"), 8, "w", callback=callback)
    assert proc.run().exit_code == 0
    assert out.read_bytes() == b"writes=5 counter=5\n"
    assert seen == [1, 2] and wp.hits == 2 and not wp.active and proc.watchpoints == []


def test_bad_watchpoints_are_one_line_errors_and_set_nothing(build, spawn_captured):
    exe = build("watchpoints")
    proc, out = spawn_captured([exe, "store", "3"])
    counter = addr(proc, exe, "counter")
    cases = [
        ((counter, 3, "w"), "1, 2, 4 or 8 bytes, not 3"),
        ((counter + 4, 8, "w"), "aligned to 8"),
        ((counter, 8, "r"), "not one of w, rw, x"),
        ((0x1000, 8, "w"), "address 0x1000 is not mapped"),
    ]
    for args, message in cases:
        with pytest.raises(StepperError, match=message) as e:
            proc.watch(*args)
        assert "\n" not in str(e.value)
    assert proc.watchpoints == []
    four = [watch_or_skip(proc, counter, size, "rw") for size in (8, 4, 2, 1)]
    assert sorted(wp.slot for wp in four) == [0, 1, 2, 3]
    with pytest.raises(StepperError, match="more than four watchpoints"):
        proc.watch(counter, 8, "w")
    proc.unwatch(four[0])
    again = proc.watch(counter, 8, "w")  # its slot is free again
    assert again.slot == four[0].slot
    assert proc.run().exit_code == 0
    assert out.read_bytes() == b"writes=3 counter=3\n"
    # One trap fires every slot covering the access: each watchpoint counts it.
    assert again.hits == 3 and [wp.hits for wp in four[1:]] == [4, 4, 4]


def test_detach_removes_the_watchpoints(build, spawn_captured):
    """Debug registers survive PTRACE_DETACH: left set, the program's next store would kill
    it with SIGTRAP. Detached at the first hit, it must run on to its normal end."""
    exe = build("watchpoints")
    proc, out = spawn_captured([exe, "store", "50"])
    wp = watch_or_skip(proc, addr(proc, exe, "counter"), 8, "w",
                       callback=lambda hit: proc.detach())
    status = proc.run()
    assert status.detached and wp.hits == 1
    status = wait_with_deadline(proc.pid, 60)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert out.read_bytes() == b"writes=50 counter=50\n"
