"""stepper.spawn: a traced child stopped at its exec, and an exec failure reported as the
exec itself says it."""

import os
import signal

import pytest

from stepper import kernel, spawn


def test_child_stops_at_its_exec_trap_before_running():
    pid = spawn.traced_child(["true"], dict(os.environ))
    try:
        _, status = os.waitpid(pid, kernel.WALL)
        assert os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGTRAP
        with open(f"/proc/{pid}/comm") as comm:
            assert comm.read().strip() == "true"   # the exec happened, under trace
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, kernel.WALL)


def test_exec_failure_is_raised_with_the_exec_message(tmp_path):
    missing = str(tmp_path / "absent")
    with pytest.raises(OSError) as own:
        spawn.traced_child([missing], {})
    try:
        os.execvpe(missing, [missing], {})
    except OSError as exec_error:
        expected = str(exec_error)
    assert str(own.value) == expected
    assert own.value.errno == 2
