"""Wait statuses, decoded in one place into what happened to a traced thread.

`os.waitpid` on a traced thread reports one of: an exit, a death by signal, a signal-delivery
stop (the program's own signal, a trap, our SIGSTOP), a ptrace event stop (the status's bits
16..23 hold PTRACE_EVENT_*, the stop signal is SIGTRAP; linux/ptrace.h and ptrace(2)) or, for
a seized thread, a group-stop (PTRACE_EVENT_STOP). The engine's loop and its detach both read
stops through `decode`; only the breakpoint hit is recognised before decoding, by comparing
the raw status with one integer (`TRAP_STATUS`), because it is the hot path.

Decoded stops are immutable and a process sees few distinct statuses, so each is decoded
once and kept: the second stop of an out-of-line step costs a dict lookup, not an object.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

from . import kernel

#: PTRACE_EVENT_* (linux/ptrace.h) -> its name in `WaitStatus.event`.
EVENTS = {kernel.EVENT_FORK: "fork", kernel.EVENT_VFORK: "vfork", kernel.EVENT_CLONE: "clone",
          kernel.EVENT_EXEC: "exec", kernel.EVENT_VFORK_DONE: "vfork-done",
          kernel.EVENT_EXIT: "exit", 7: "seccomp"}
#: PTRACE_EVENT_STOP: the group-stop (or PTRACE_INTERRUPT stop) of a seized thread.
EVENT_STOP = 128
#: The raw status of a breakpoint hit or a step trap: stopped by SIGTRAP, no event.
TRAP_STATUS = (signal.SIGTRAP << 8) | 0x7F
KINDS = ("exited", "killed", "signal", "event", "group-stop")


@dataclass(frozen=True, slots=True)
class WaitStatus:
    """What one wait status says.

    `kind`: "exited", "killed", "signal" (a signal-delivery stop: `signal` is the signal the
    thread would receive), "event" (a ptrace event stop: `event` names it, from EVENTS) or
    "group-stop". `signal`: the stop signal, or the signal that killed the thread; 0 for an
    exit. `exit_code`: for "exited" only.
    """

    kind: str
    signal: int = 0
    exit_code: int | None = None
    event: str | None = None

    @property
    def stopped(self) -> bool:
        return self.kind not in ("exited", "killed")


_decoded: dict[int, WaitStatus] = {}


def decode(status: int) -> WaitStatus:
    """The meaning of `status` as returned by os.waitpid for a traced thread."""
    known = _decoded.get(status)
    if known is None:
        known = _decoded[status] = _decode(status)
    return known


def _decode(status: int) -> WaitStatus:
    if os.WIFEXITED(status):
        return WaitStatus("exited", 0, os.WEXITSTATUS(status))
    if os.WIFSIGNALED(status):
        return WaitStatus("killed", os.WTERMSIG(status))
    sig = os.WSTOPSIG(status)
    event = status >> 16
    if event == EVENT_STOP:
        return WaitStatus("group-stop", sig)
    if event:
        return WaitStatus("event", sig, event=EVENTS.get(event, f"event {event}"))
    return WaitStatus("signal", sig)
