"""Runs of a program in a subprocess: unprobed, probed through `stepper probe`, and the
clean-up that leaves no traced or tracing process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class Run:
    stdout: bytes
    stderr: bytes
    returncode: int
    report: dict | None = None


def run_plain(argv: list[str], timeout: float = 60) -> Run:
    p = subprocess.run(argv, capture_output=True, timeout=timeout)
    return Run(p.stdout, p.stderr, p.returncode)


def run_cli(argv: list[str], addresses: list[int], mode: str = "auto", tmp_path=None,
            timeout: float = 120) -> Run:
    """`stepper probe` in a subprocess; the JSON report is read back when tmp_path is given."""
    cmd = [sys.executable, "-m", "stepper.cli", "probe", "--mode", mode, "--quiet"]
    report_path = None
    if tmp_path is not None:
        report_path = tmp_path / f"report-{len(os.listdir(tmp_path))}.json"
        cmd += ["--json", str(report_path)]
    for a in addresses:
        cmd += ["-p", hex(a)]
    p = subprocess.run(cmd + ["--", *argv], capture_output=True, timeout=timeout)
    report = None
    if report_path is not None and report_path.exists():
        report = json.loads(report_path.read_text())
    return Run(p.stdout, p.stderr, p.returncode, report)


def probe_specs(tmp_path, specs: list[str], argv: list[str], *options: str,
                timeout: float = 120) -> tuple[subprocess.CompletedProcess, dict | None]:
    """`stepper probe --json ... -p SPEC... -- ARGV` in a subprocess, text mode, with the table
    on stderr; the JSON report read back (None if none was written)."""
    report = tmp_path / f"report-{len(list(tmp_path.glob('report-*.json')))}.json"
    cmd = [sys.executable, "-m", "stepper.cli", "probe", "--json", str(report), *options]
    for spec in specs:
        cmd += ["-p", spec]
    run = subprocess.run(cmd + ["--", *argv], capture_output=True, timeout=timeout, text=True)
    return run, (json.loads(report.read_text()) if report.exists() else None)


@contextmanager
def ended(*procs: subprocess.Popen):
    """Kill and reap whichever of `procs` still runs when the block is left (a failed
    assertion or a timeout must not leave a traced or tracing process behind)."""
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def wait_with_deadline(pid: int, limit_s: float) -> int:
    """waitpid of a program let go (detached), with a deadline: a broken detach fails the
    test instead of hanging it (the program is killed)."""
    import pytest

    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"the detached program {pid} did not finish within {limit_s} s")
