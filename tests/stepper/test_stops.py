"""Wait statuses decoded into typed stops: real statuses from real children (plain and
traced), and every kind round-tripped through the encoding wait(2) and ptrace(2) document
(exit code << 8; the killing signal; signal << 8 | 0x7f for a stop; PTRACE_EVENT_x << 16 on
top of a SIGTRAP stop)."""

from __future__ import annotations

import os
import signal

import pytest

from stepper import kernel, stops


def _status_of(child) -> int:
    """The first wait status of a forked child running `child` (killed if it stopped)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            child()
        finally:
            os._exit(99)
    status = os.waitpid(pid, os.WUNTRACED)[1]
    if os.WIFSTOPPED(status):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return status


def _encode(stop: stops.WaitStatus) -> int:
    """The raw status the kernel reports for `stop` (the inverse of decode)."""
    if stop.kind == "exited":
        return stop.exit_code << 8
    if stop.kind == "killed":
        return stop.signal
    high = 0
    if stop.kind == "event":
        high = next(n for n, name in stops.EVENTS.items() if name == stop.event)
    elif stop.kind == "group-stop":
        high = stops.EVENT_STOP
    return (high << 16) | (stop.signal << 8) | 0x7F


def test_an_exit_a_death_and_a_stop_of_real_children():
    assert stops.decode(_status_of(lambda: os._exit(3))) == stops.WaitStatus("exited", 0, 3)
    killed = stops.decode(_status_of(lambda: os.kill(os.getpid(), signal.SIGKILL)))
    assert killed == stops.WaitStatus("killed", signal.SIGKILL) and not killed.stopped
    stopped = stops.decode(_status_of(lambda: os.kill(os.getpid(), signal.SIGSTOP)))
    assert stopped == stops.WaitStatus("signal", signal.SIGSTOP) and stopped.stopped


def test_fork_and_exec_events_of_a_real_traced_child():
    """A traced child that forks then execs: the tracer's waitpid reports both events."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            kernel._ptrace(0, 0, 0, 0)  # PTRACE_TRACEME
            os.kill(os.getpid(), signal.SIGSTOP)
            if os.fork() == 0:
                os._exit(0)
            os.execv("/bin/true", ["true"])
        finally:
            os._exit(99)
    seen = []
    try:
        status = os.waitpid(pid, kernel.WALL)[1]
        assert stops.decode(status) == stops.WaitStatus("signal", signal.SIGSTOP)
        kernel.setoptions(pid, kernel.O_TRACEFORK | kernel.O_TRACEEXEC)
        kernel.cont(pid)
        while True:
            tid, status = os.waitpid(-1, kernel.WALL)
            stop = stops.decode(status)
            if tid == pid:
                seen.append(stop)
                if not stop.stopped:
                    break
            if stop.stopped:
                kernel.cont(tid, 0 if stop.signal in (signal.SIGTRAP, signal.SIGSTOP)
                            else stop.signal)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    events = [s.event for s in seen if s.kind == "event"]
    assert events == ["fork", "exec"]
    assert all(s.signal == signal.SIGTRAP for s in seen if s.kind == "event")
    assert seen[-1] == stops.WaitStatus("exited", 0, 0)


KINDS = [stops.WaitStatus("exited", 0, 0), stops.WaitStatus("exited", 0, 255),
         stops.WaitStatus("killed", signal.SIGKILL), stops.WaitStatus("killed", signal.SIGSEGV),
         stops.WaitStatus("signal", signal.SIGTRAP), stops.WaitStatus("signal", signal.SIGUSR1),
         stops.WaitStatus("group-stop", signal.SIGSTOP)] + [
    stops.WaitStatus("event", signal.SIGTRAP, event=name) for name in stops.EVENTS.values()]


@pytest.mark.parametrize("stop", KINDS, ids=lambda s: f"{s.kind}-{s.event or s.signal}")
def test_round_trip_per_kind(stop):
    status = _encode(stop)
    assert stops.decode(status) == stop
    assert stop.kind in stops.KINDS
    # the encoding is the one os.W* read
    assert os.WIFEXITED(status) == (stop.kind == "exited")
    assert os.WIFSIGNALED(status) == (stop.kind == "killed")
    assert os.WIFSTOPPED(status) == stop.stopped
    if stop.stopped:
        assert os.WSTOPSIG(status) == stop.signal


def test_the_hit_status_is_a_plain_sigtrap_stop():
    assert stops.decode(stops.TRAP_STATUS) == stops.WaitStatus("signal", signal.SIGTRAP)
    assert stops.decode(stops.TRAP_STATUS) is stops.decode(stops.TRAP_STATUS)  # kept once
