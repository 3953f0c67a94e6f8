"""What a debugger's `cont()` or step returns (stepper.debugger): the Stop record, its kinds,
and the count of instruction steps by how they ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .records import ExitStatus

if TYPE_CHECKING:  # pragma: no cover
    from .debugger import ThreadHandle

KINDS = ("breakpoint", "step", "return", "watchpoint", "signal", "exit", "fork", "exec",
         "interrupt")
EVENTS = ("fork", "exec")


@dataclass
class StepStats:
    """Instruction steps (`t.step()`): run by the emulator (no trap) or by the CPU."""

    emulated: int = 0
    trapped: int = 0


@dataclass(frozen=True)
class Stop:
    """Why `cont()` (or a step) returned; every thread of the program is stopped."""

    kind: str
    thread: "ThreadHandle | None" = None
    breakpoint: Any = None
    watchpoint: Any = None
    signal: int | None = None
    exit: ExitStatus | None = None
    return_value: int | None = None
    #: kind "watchpoint": the hit itself (stepper.watchpoints.WatchHit: rip, old and new
    #: value); `watchpoint` is the Watchpoint
    watch: Any = None
