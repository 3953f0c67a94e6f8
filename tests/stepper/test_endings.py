"""Every way a `stepper probe` run ends keeps the report and the program's exit status: the
program killed by SIGKILL, Ctrl-C (SIGINT to the whole foreground group), SIGINT or SIGTERM
to stepper alone. stepper runs as a subprocess on a program of its own (below)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Iterator

import pytest

from tests.support.elf import symbol
from tests.support.programs import gcc
from tests.support.runs import ended, run_cli, run_plain

#: argv[1]: "default" loops until a signal kills it; "handle" catches SIGINT and SIGTERM and
#: then ends by itself (exit 3), printing how often it called f; "read" calls f until a byte
#: arrives on stdin, then exits 0 with the count.
PROGRAM = r"""
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
static volatile sig_atomic_t got;
static long calls;
__attribute__((noinline)) void f(void) { calls++; __asm__ volatile("" ::: "memory"); }
static void on(int sig) { got = sig; }
int main(int argc, char **argv) {
    const char *how = argc > 1 ? argv[1] : "default";
    if (!strcmp(how, "handle")) { signal(SIGINT, on); signal(SIGTERM, on); }
    f();
    printf("ready\n");
    fflush(stdout);
    if (!strcmp(how, "read")) {
        char c;
        if (read(0, &c, 1) != 1) return 1;
        f();
        printf("calls=%ld\n", calls);
        return 0;
    }
    while (!got) { f(); usleep(1000); }
    f();
    printf("calls=%ld got=%d\n", calls, got);
    return 3;
}
"""


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    d = tmp_path_factory.mktemp("endings")
    (d / "ends.c").write_text(PROGRAM)
    return gcc(d / "ends", d / "ends.c")


@contextmanager
def _started(program: str, how: str, report, **popen) -> Iterator[subprocess.Popen]:
    """stepper probe on `program how`, f probed, stdout piped, in a process group of its own
    (the terminal's foreground group, for Ctrl-C); yields once the program is ready. Whatever
    is left of the group is killed when the block is left (a failed test must not leave a
    program running untraced)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "stepper.cli", "probe", "--json", str(report), "-p", "f", "--",
         program, how], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True, **popen)
    try:
        with ended(proc):
            assert proc.stdout.readline() == b"ready\n"
            yield proc
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _calls(stdout: bytes) -> int:
    return int(stdout.split(b"calls=")[1].split()[0])


def test_program_killed_by_sigkill(build, tmp_path):
    """kill -9 (or the OOM killer): table and JSON, then stepper dies of SIGKILL too (137)."""
    exe = build("killself")
    plain = run_plain([exe, "9"])
    assert plain.returncode == -signal.SIGKILL
    probed = run_cli([exe, "9"], [symbol(exe, "step")[0]], "auto", tmp_path)
    assert (probed.stdout, probed.returncode) == (plain.stdout, -signal.SIGKILL), probed.stderr
    assert b"Traceback" not in probed.stderr
    assert (probed.report["exit_code"], probed.report["signal"]) == (None, signal.SIGKILL)
    assert probed.report["probes"][0]["hits"] == 10


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP])
def test_ctrl_c_the_program_dies_of_it_and_stepper_too(program, tmp_path, sig):
    """The terminal sends SIGINT (Ctrl-C; SIGHUP on a hangup) to the foreground group: the
    program (default disposition) dies of it; stepper writes the table and JSON, then dies
    of the same signal (a shell shows 130 for SIGINT)."""
    report = tmp_path / "r.json"
    with _started(program, "default", report) as proc:
        os.killpg(proc.pid, sig)
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == -sig, stderr
    assert b"program killed by %s" % sig.name.encode() in stderr
    assert b"Traceback" not in stderr
    data = json.loads(report.read_text())
    assert (data["exit_code"], data["signal"], data["detached"]) == (None, sig, False)
    assert data["probes"][0]["hits"] >= 1


def test_ctrl_c_the_program_handles_it_and_is_traced_to_its_end(program, tmp_path):
    """A program that catches SIGINT goes on, traced: every call of f after Ctrl-C counted,
    stepper exits with the program's own status."""
    report = tmp_path / "r.json"
    with _started(program, "handle", report) as proc:
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 3, stderr
    assert stdout.endswith(b" got=%d\n" % signal.SIGINT)
    data = json.loads(report.read_text())
    assert (data["exit_code"], data["signal"]) == (3, None)
    assert data["probes"][0]["hits"] == _calls(stdout)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP])
def test_sigint_to_stepper_alone_changes_nothing(program, tmp_path, sig):
    """SIGINT (or SIGHUP) that only stepper gets (kill -INT): the program is not touched and
    is traced to its own end."""
    report = tmp_path / "r.json"
    with _started(program, "read", report, stdin=subprocess.PIPE) as proc:
        proc.send_signal(sig)
        time.sleep(0.5)  # let it arrive first (without it the test passes the same way)
        stdout, stderr = proc.communicate(b"x", timeout=60)
    assert proc.returncode == 0, stderr
    data = json.loads(report.read_text())
    assert (data["exit_code"], data["detached"]) == (0, False)
    assert data["probes"][0]["hits"] == _calls(stdout) == 2


@pytest.mark.parametrize("how, returncode", [("default", -signal.SIGTERM), ("handle", 3)])
def test_sigterm_to_stepper_alone_is_passed_to_the_program(program, tmp_path, how,
                                                           returncode):
    """kill PID (stepper's): the program gets the SIGTERM and decides; the report is written
    and stepper ends the way the program did."""
    report = tmp_path / "r.json"
    with _started(program, how, report) as proc:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == returncode, stderr
    data = json.loads(report.read_text())
    if how == "default":
        assert (data["exit_code"], data["signal"]) == (None, signal.SIGTERM)
    else:
        assert stdout.endswith(b" got=%d\n" % signal.SIGTERM)
        assert (data["exit_code"], data["signal"]) == (3, None)
        assert data["probes"][0]["hits"] == _calls(stdout)



@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGQUIT, signal.SIGTERM])
def test_attached_hangup_detaches_and_the_report_is_written(program, tmp_path, sig):
    """--pid: a closed terminal (SIGHUP), Ctrl-\\ (SIGQUIT) or SIGTERM let the process go
    with every INT3 removed (else its next call of f would kill it with SIGTRAP), and the
    report is written."""
    report = tmp_path / "r.json"
    target = subprocess.Popen([program, "read"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    with ended(target):
        assert target.stdout.readline() == b"ready\n"
        tracer = subprocess.Popen(
            [sys.executable, "-m", "stepper.cli", "probe", "--json", str(report), "--pid",
             str(target.pid), "-p", "f"], stderr=subprocess.PIPE)
        with ended(tracer):
            assert tracer.stderr.readline().startswith(b"stepper: attached to ")
            tracer.send_signal(sig)
            _, stderr = tracer.communicate(timeout=60)
        assert tracer.returncode == 0, stderr
        data = json.loads(report.read_text())
        assert (data["detached"], data["probes"][0]["hits"]) == (True, 0)
        stdout, _ = target.communicate(b"x", timeout=60)
        assert (target.returncode, stdout) == (0, b"calls=2\n")
