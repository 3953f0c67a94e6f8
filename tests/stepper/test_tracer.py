"""The tracer's loop (stepper.tracer) on real programs: the program's own signals pass
through unchanged, an exec drops the old image's breakpoints, and the on_exec/on_fork hooks
see the new image and each followed child."""

from __future__ import annotations

import pytest

from tests.support.elf import symbol
from tests.support.runs import run_cli, run_plain


@pytest.mark.parametrize("mode", ["auto", "xol", "boost"])
def test_signals_pass_through_unchanged(build, tmp_path, mode):
    """Handled signals (raised ones, and a timer landing anywhere, mid-step included) reach
    the program as unprobed; SIGPIPE starts with its default disposition."""
    exe = build("signals")
    plain = run_plain([exe])
    assert plain.stdout.startswith(b"sigpipe default\n")
    probed = run_cli([exe], [symbol(exe, "work")[0]], mode, tmp_path)
    assert (probed.stdout, probed.returncode) == (plain.stdout, plain.returncode)
    # A signal that stops an XOL step before the instruction ran sends the thread back to the
    # probe, which is hit again when the handler returns: at least one hit per call.
    assert probed.report["probes"][0]["hits"] >= 5000


def test_exec_drops_the_old_images_breakpoints(build, tmp_path):
    exe = build("execer")
    plain = run_plain([exe, "again"])
    assert plain.stdout == b"n=3\nn=3\n" and plain.returncode == 5
    probed = run_cli([exe, "again"], [symbol(exe, "f")[0]], "auto", tmp_path)
    assert (probed.stdout, probed.returncode) == (plain.stdout, plain.returncode)
    assert probed.report["probes"][0]["hits"] == 3  # the new image was not probed


def test_on_exec_puts_probes_in_the_new_image_and_on_fork_sees_the_child(build, spawn_captured):
    """The hooks `stepper probe` follows children and execs with: on_exec at the exec stop
    (the old image's breakpoints retired with their counts, a new one at f counts the new
    image's 3 calls); on_fork with the child's own copies of the breakpoints."""
    from stepper import api

    exe = build("execer")
    proc, out = spawn_captured([exe, "again"])
    first = proc.break_at(proc.load_bias + symbol(exe, "f")[0])
    later: list[api.Breakpoint] = []

    def execed(p: api.Process) -> None:
        assert p == proc and p.breakpoints == [] and p.retired_breakpoints == [first]
        later.append(p.break_at(p.load_bias + symbol(exe, "f")[0]))

    proc.on_exec(execed)
    status = proc.run()
    assert (status.exit_code, out.read_bytes()) == (5, b"n=3\nn=3\n")
    assert first.stats.hits == 3 and [bp.stats.hits for bp in later] == [3]

    family = build("family")
    proc, out = spawn_captured([family])
    bp = proc.break_at(proc.load_bias + symbol(family, "f")[0])
    forks: list[tuple] = []
    proc.on_fork(lambda parent, child: forks.append(
        (parent, child, [c.address for c in child.breakpoints], child.parent)))
    assert proc.run().exit_code == 3
    assert [(p, c.pid, addresses, up) for p, c, addresses, up in forks] == [
        (proc, child.pid, [bp.address], proc) for child in proc.children]
    assert len(forks) == 2 and bp.stats.hits == 4   # the root's own calls only
    assert sorted(c.breakpoints[0].stats.hits for c in proc.children) == [2, 5]


def test_an_observer_sees_the_thread_and_its_registers_before_the_callback(build, spawn_captured):
    """`Breakpoint.observer(tid, regs_buffer)`, the engine's read-only hook for traced probes:
    called at each hit before the callback, with the thread's own register buffer (rip at the
    breakpoint, the arguments in place); forked children's copies keep it."""
    from stepper import kernel

    exe = build("family")
    proc, out = spawn_captured([exe])
    address = proc.load_bias + symbol(exe, "f")[0]
    seen: list[tuple] = []
    bp = proc.break_at(address, callback=lambda hit: seen.append(("callback", hit.tid)))
    bp.observer = lambda tid, buf: seen.append(
        ("observer", tid, buf[kernel.RIP] == address, buf[kernel.REG_INDEX["rdi"]]))
    assert proc.run().exit_code == 3
    root = [s for s in seen if s[1] == proc.pid]
    # f(done) with done = 0, 1, 2: each observed, then called back
    assert root[:6] == [("observer", proc.pid, True, 0), ("callback", proc.pid),
                        ("observer", proc.pid, True, 1), ("callback", proc.pid),
                        ("observer", proc.pid, True, 2), ("callback", proc.pid)]
    children = {c.pid for c in proc.children}
    observed = [s for s in seen if s[0] == "observer" and s[1] in children]
    assert len(observed) == 7 and all(s[2] for s in observed)   # 2 + 5 calls in the children
    assert all(c.breakpoints[0].observer is bp.observer for c in proc.children)
