"""Leaving a program: when the tracer raises (here: a callback), every INT3 byte is restored,
threads mid-step are put back in the original stream, the XOL area is unmapped, and the
program runs on untraced to the end it would have had."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.support.elf import symbol
from tests.support.runs import run_cli, run_plain
from stepper import maps


class Boom(Exception):
    pass


@pytest.mark.parametrize("mode", ["auto", "xol", "boost"])
def test_exception_in_callback_leaves_program_running_unharmed(build, spawn_captured, mode):
    exe = build("threads")
    plain = run_plain([exe, "3000", "lock"])
    assert plain.stdout == b"total=0 counter=96000\n"
    proc, out = spawn_captured([exe, "3000", "lock"], mode)
    hits = []
    seen_area = []

    def callback(hit):
        hits.append(hit.tid)
        if len(hits) == 2000:
            seen_area.extend(m for m in maps.read(proc.pid) if m.start == _area(proc))
            raise Boom("from the callback")

    # `mov eax, 1` (b8 01 00 00 00): resumed one byte late it would be `add [rax], eax`.
    proc.break_at(proc.load_bias + symbol(exe, "lock_add")[0], callback=callback)
    proc.break_at(proc.load_bias + symbol(exe, "lock_site")[0])  # XOL steps in flight
    with pytest.raises(Boom):
        proc.run()
    if mode == "xol":
        assert seen_area and seen_area[0].perms == "r-xp"  # read+execute only, never writable
    # Detached: an INT3 left behind would kill it with SIGTRAP, a thread left in the XOL
    # slot would crash or compute garbage; it ends exactly as unprobed instead.
    status = _wait(proc.pid, 60)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == plain.returncode
    assert out.read_bytes() == plain.stdout
    assert len(set(hits)) > 1  # several threads were inside the probe when it happened


def _wait(pid: int, limit_s: float) -> int:
    """waitpid with a deadline, so a broken detach fails the test instead of hanging it."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"the detached program {pid} did not finish within {limit_s} s")


def _area(proc) -> int | None:
    area = proc._session._area
    return area.address if area is not None and area.address else -1


@pytest.mark.parametrize("sig", [15, 6])
def test_cli_dies_of_the_programs_signal(build, tmp_path, sig):
    """Like strace: stepper ends killed by the same signal (no core file for SIGABRT)."""
    exe = build("killself")
    plain = run_plain([exe, str(sig)])
    assert plain.returncode == -sig
    probed = run_cli([exe, str(sig)], [symbol(exe, "step")[0]], "auto", tmp_path)
    assert (probed.stdout, probed.returncode) == (plain.stdout, -sig)
    report = probed.report
    assert (report["exit_code"], report["signal"]) == (None, sig)
    assert report["probes"][0]["hits"] == 10


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


def test_the_documented_example_runs(build, tmp_path):
    """docs/engine.md's library example, run as written against a tracee with a function f."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "engine.md").read_text()
    example = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    script = tmp_path / "example.py"
    script.write_text(example)
    run = subprocess.run([sys.executable, str(script), build("execer")], capture_output=True,
                         timeout=60, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-2:] == [
        "5 None 3", "emulate 3 {'emulate': 3, 'xol': 0, 'reinsert': 0, 'boost': 0} {}"]


@pytest.mark.parametrize("mode", ["auto", "xol", "boost"])
def test_sigint_to_stepper_alone_leaves_the_program_traced_to_its_end(build, tmp_path, mode):
    """SIGINT to stepper alone while it runs a program (8 threads mid-probe): stepper does
    not stop (a Ctrl-C reaches the program too, which decides), the program runs to its end
    traced, and stepper exits with its status and every hit counted."""
    import json
    import subprocess
    import sys

    exe = build("threads")
    plain = run_plain([exe, "40000"])
    report = tmp_path / "r.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "stepper.cli", "probe", "--quiet", "--mode", mode,
         "--json", str(report), "-p", hex(symbol(exe, "work")[0]), "--", exe, "40000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not _has_threads(proc.pid, 8):
        time.sleep(0.05)
    time.sleep(0.3)  # well inside the probed loop: 320,000 hits take far longer
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == plain.returncode and b"Traceback" not in stderr, stderr
    assert stdout == plain.stdout
    data = json.loads(report.read_text())
    assert (data["exit_code"], data["detached"]) == (plain.returncode, False)
    assert data["probes"][0]["hits"] >= 8 * 40000


def _has_threads(stepper_pid: int, count: int) -> bool:
    """True once stepper's child (the program) runs `count` threads besides its main one."""
    try:
        children = open(f"/proc/{stepper_pid}/task/{stepper_pid}/children").read().split()
        return any(len(os.listdir(f"/proc/{c}/task")) > count for c in children)
    except OSError:
        return False


def test_ctrl_c_between_two_ptrace_calls_of_an_xol_hit(build, spawn_captured, monkeypatch):
    """SIGINT landing right after XolOps.hit moved RIP into the slot (before the step is
    recorded): it must wait for the loop's next safe point. Raised there, the detach left
    that thread in the unmapped XOL area (SIGSEGV, no output)."""
    import sys

    from stepper import ptrace_lean, strategies

    exe = build("threads")
    plain = run_plain([exe, "40000"])
    proc, out = spawn_captured([exe, "40000"], "xol")
    proc.break_at(proc.load_bias + symbol(exe, "work")[0])
    setregs, calls = ptrace_lean.setregs, []

    def setregs_then_sigint(tid, regs):
        setregs(tid, regs)
        if sys._getframe(1).f_code is strategies.XolOps.hit.__code__:
            calls.append(tid)
            if len(calls) == 500:  # RIP is in the slot now; t.step is not set yet
                signal.raise_signal(signal.SIGINT)  # handled at the next bytecode, in here

    monkeypatch.setattr(strategies.ptrace_lean, "setregs", setregs_then_sigint)
    with pytest.raises(KeyboardInterrupt):
        proc.run()
    monkeypatch.undo()
    status = _wait(proc.pid, 60)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == plain.returncode
    assert out.read_bytes() == plain.stdout


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
