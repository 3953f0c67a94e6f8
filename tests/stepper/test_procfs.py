"""stepper.procfs on real processes: this one, a traced child in a ptrace stop, a child
stopped by SIGSTOP without a tracer, and pids that are gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

from stepper import procfs
from stepper.errors import StepperError


def _gone_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid  # reaped: no such process until the pid is reused (not within a test)


def test_exe_of_this_process():
    assert procfs.exe_of(os.getpid()) == os.path.realpath(sys.executable)


def test_tgid_and_tasks_of_a_thread():
    seen = {}
    ready, done = threading.Event(), threading.Event()

    def run():
        seen["tid"] = threading.get_native_id()
        ready.set()
        done.wait(10)

    t = threading.Thread(target=run)
    t.start()
    try:
        ready.wait(10)
        assert seen["tid"] != os.getpid()
        assert procfs.tgid_of(seen["tid"]) == os.getpid()
        assert {os.getpid(), seen["tid"]} <= procfs.tasks(os.getpid())
    finally:
        done.set()
        t.join()


def test_trace_stop_is_told_from_a_plain_stop(stopped_tracee):
    pid, exe = stopped_tracee
    assert procfs.thread_state(pid) == "t" and procfs.in_trace_stop(pid)
    assert procfs.exe_of(pid) == os.path.realpath(exe)
    plain = subprocess.Popen(["sleep", "30"])
    try:
        os.kill(plain.pid, signal.SIGSTOP)
        os.waitpid(plain.pid, os.WUNTRACED)
        assert procfs.thread_state(plain.pid) == "T" and not procfs.in_trace_stop(plain.pid)
    finally:
        plain.kill()
        plain.wait()


def test_gone_processes():
    pid = _gone_pid()
    assert procfs.thread_state(pid) is None and not procfs.in_trace_stop(pid)
    for ask in (procfs.exe_of, procfs.tgid_of, procfs.tasks):
        with pytest.raises(StepperError, match=f"^no process {pid}$"):
            ask(pid)
