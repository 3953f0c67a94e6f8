"""Wait statuses decoded into typed stops: real statuses from real children, and the ptrace
event encoding (status >> 8 == SIGTRAP | PTRACE_EVENT_x << 8, as ptrace(2) documents)."""

from __future__ import annotations

import os
import signal

import pytest

from stepper import stops


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


def test_an_exit_a_death_and_a_stop_of_real_children():
    assert stops.decode(_status_of(lambda: os._exit(3))) == stops.WaitStatus("exited", 0, 3)
    killed = stops.decode(_status_of(lambda: os.kill(os.getpid(), signal.SIGKILL)))
    assert killed == stops.WaitStatus("killed", signal.SIGKILL) and not killed.stopped
    stopped = stops.decode(_status_of(lambda: os.kill(os.getpid(), signal.SIGSTOP)))
    assert stopped == stops.WaitStatus("signal", signal.SIGSTOP) and stopped.stopped


@pytest.mark.parametrize("event, kind", sorted(stops.EVENTS.items()))
def test_ptrace_events(event, kind):
    status = (event << 16) | (signal.SIGTRAP << 8) | 0x7F
    decoded = stops.decode(status)
    assert (decoded.kind, decoded.signal, decoded.stopped) == (kind, signal.SIGTRAP, True)


def test_the_hit_status_is_a_plain_sigtrap_stop():
    assert stops.decode(stops.TRAP_STATUS) == stops.WaitStatus("signal", signal.SIGTRAP)
