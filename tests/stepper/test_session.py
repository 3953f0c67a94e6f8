"""The engine's public face (stepper.session) from the outside: stepper ends the way the
program did, Ctrl-C to stepper alone leaves the program traced to its end, and the library
example of docs/engine.md runs as written. Leaving a program is tested in test_detach.py,
the loop's handling of stops in test_tracer.py."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.support.elf import symbol
from tests.support.runs import run_cli, run_plain


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
