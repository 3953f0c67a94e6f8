"""Wait statuses, decoded in one place into what happened to a traced thread.

`os.waitpid` on a traced thread reports one of: an exit, a death by signal, a signal-delivery
stop (the program's own signal, a trap, our SIGSTOP) or a ptrace event stop (the status's high
byte holds PTRACE_EVENT_*, the stop signal is SIGTRAP; linux/ptrace.h and ptrace(2)). Only the
breakpoint hit is recognised before this decoding, by comparing the raw status with one
integer, because it is the hot path.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

#: PTRACE_EVENT_* (linux/ptrace.h) -> the kind of stop it reports.
EVENTS = {1: "fork", 2: "vfork", 3: "clone", 4: "exec", 5: "vfork_done", 6: "exit",
          7: "seccomp", 128: "group_stop"}
#: The raw status of a breakpoint hit: stopped by SIGTRAP, no event (compared directly).
TRAP_STATUS = (signal.SIGTRAP << 8) | 0x7F


@dataclass(frozen=True, slots=True)
class WaitStatus:
    """What one wait status says.

    `kind`: "exited", "killed", "signal" (a signal-delivery stop: `signal` is the signal the
    thread would receive) or a ptrace event from EVENTS ("clone", "fork", "exec"...).
    `signal`: the stop signal, or the signal that killed the thread; 0 for an exit.
    `exit_code`: for "exited" only.
    """

    kind: str
    signal: int = 0
    exit_code: int | None = None

    @property
    def stopped(self) -> bool:
        return self.kind not in ("exited", "killed")


def decode(status: int) -> WaitStatus:
    """The meaning of `status` as returned by os.waitpid for a traced thread."""
    if os.WIFEXITED(status):
        return WaitStatus("exited", 0, os.WEXITSTATUS(status))
    if os.WIFSIGNALED(status):
        return WaitStatus("killed", os.WTERMSIG(status))
    sig = os.WSTOPSIG(status)
    event = status >> 16
    if event:
        return WaitStatus(EVENTS.get(event, f"event {event}"), sig)
    return WaitStatus("signal", sig)
