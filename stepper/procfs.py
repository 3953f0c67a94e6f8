"""What /proc says about a process and its threads: the executable, the thread group, the
task list and a thread's state letter. One reader each, for the engine and the XOL area.
"""

from __future__ import annotations

import os

from .errors import StepperError


def exe_of(pid: int) -> str:
    """The path of process `pid`'s executable, as the kernel resolved it at exec."""
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except FileNotFoundError:
        raise StepperError(f"no process {pid}") from None
    except PermissionError:
        raise StepperError(f"process {pid} is not yours to trace") from None
    except OSError as e:
        raise StepperError(f"process {pid}: {e.strerror}") from None


def tgid_of(pid: int) -> int:
    """The process (thread group) that thread `pid` belongs to."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Tgid:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    raise StepperError(f"no process {pid}")


def tasks(pid: int) -> set[int]:
    """The thread ids of process `pid` now."""
    try:
        return {int(name) for name in os.listdir(f"/proc/{pid}/task")}
    except FileNotFoundError:
        raise StepperError(f"no process {pid}") from None


def thread_state(tid: int) -> str | None:
    """Thread `tid`'s state letter from /proc/TID/stat (None if it is gone)."""
    try:
        with open(f"/proc/{tid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def in_trace_stop(tid: int) -> bool:
    """Whether thread `tid` sits in a ptrace stop (state `t` in /proc/TID/stat)."""
    return thread_state(tid) == "t"
