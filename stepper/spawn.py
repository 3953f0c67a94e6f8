"""Fork and exec a program under PTRACE_TRACEME: what python-ptrace's createChild does for
stepper (its `ptrace.debugger` package costs ~30 ms of imports on every run; this module
needs only os and the ptrace binding of stepper.kernel).

os.posix_spawn cannot ask for PTRACE_TRACEME, hence a fork. The child runs a few lines of
Python between fork and exec: no locks taken, no atexit handlers run (`os._exit`). An exec
that fails is reported through a close-on-exec pipe (nothing is read from it when the exec
succeeds), so the caller gets the error before any instruction of a program runs.
"""

from __future__ import annotations

import ctypes
import os

from . import kernel

__all__ = ["traced_child"]

_TRACEME = 0


def traced_child(argv: list[str], env: dict[str, str]) -> int:
    """Start `argv` (searched in env's PATH as execvpe does) traced by this process; its
    pid (it stops with SIGTRAP at its exec). OSError when it cannot be run, with the exec's
    errno and message."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
    except BaseException:
        os.close(read_end)
        os.close(write_end)
        raise
    if pid == 0:   # the child: nothing here may return
        try:
            os.close(read_end)
            if kernel.ptrace(_TRACEME, 0, 0, 0) == -1:
                raise OSError(ctypes.get_errno(), "PTRACE_TRACEME failed")
            os.execvpe(argv[0], argv, env)
        except BaseException as e:
            error = e.errno if isinstance(e, OSError) and e.errno else 0
            try:
                os.write(write_end, f"{error}\0{e}".encode(errors="replace"))
            finally:
                os._exit(255)
    os.close(write_end)
    try:
        report = b""
        while True:
            chunk = _read(read_end)
            if not chunk:
                break
            report += chunk
    finally:
        os.close(read_end)
    if report:
        _reap(pid)
        error, _, message = report.decode(errors="replace").partition("\0")
        failure = OSError(message)   # str(failure): the child's message as it said it
        failure.errno = int(error or 0)
        raise failure
    return pid


def _read(fd: int) -> bytes:
    while True:
        try:
            return os.read(fd, 65536)
        except InterruptedError:
            continue


def _reap(pid: int) -> None:
    while True:
        try:
            os.waitpid(pid, 0)
            return
        except InterruptedError:
            continue
        except ChildProcessError:
            return
