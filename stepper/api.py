"""The public library API: spawn a program, add breakpoints with callbacks, run, read stats.

    from stepper import api

    proc = api.spawn(["./prog", "arg"])            # stopped before its first instruction
    hits = []
    proc.break_at(proc.load_bias + 0x1139, callback=lambda hit: hits.append(hit.regs["rdi"]))
    status = proc.run()                             # until the program exits
    print(status.exit_code, proc.stats())

Everything here is a thin, stable face over stepper.session; callers should not need more.
"""

from __future__ import annotations

from typing import Callable, Sequence

from .breakpoints import Breakpoint, Stats
from .session import ExitStatus, Hit, Session
from .strategies import MODES

__all__ = ["spawn", "Process", "Breakpoint", "Stats", "ExitStatus", "Hit", "MODES"]


class Process:
    """A program started under stepper, stopped until `run()`."""

    def __init__(self, session: Session) -> None:
        self._session = session

    @property
    def pid(self) -> int:
        return self._session.pid

    @property
    def exe(self) -> str:
        """Path of the main executable, as the kernel resolved it."""
        return self._session.exe

    @property
    def load_bias(self) -> int:
        """Add this to an address printed by `nm` for the main executable (0 unless PIE)."""
        return self._session.load_bias

    @property
    def breakpoints(self) -> list[Breakpoint]:
        return list(self._session.breakpoints)

    @property
    def threads_seen(self) -> int:
        """How many threads the program had over its life (the main one included)."""
        return self._session.threads_seen

    @property
    def wall_s(self) -> float:
        return self._session.wall_s

    def break_at(self, address: int, callback: Callable[[Hit], None] | None = None,
                 mode: str | None = None) -> Breakpoint:
        """Put a breakpoint at run-time `address`. `callback(hit)` runs at every hit, before
        the instruction is stepped; `mode` overrides the process's strategy for this one.
        Raises StepperError (one line, nothing written) for an address that cannot be probed."""
        return self._session.add_breakpoint(address, mode, callback)

    def remove(self, bp: Breakpoint) -> None:
        self._session.remove_breakpoint(bp)

    def read(self, address: int, size: int) -> bytes:
        """The program's memory, breakpoint bytes hidden."""
        return self._session.read_memory(address, size)

    def run(self) -> ExitStatus:
        """Run until the program exits. On KeyboardInterrupt or any exception the program is
        left running untraced with every breakpoint removed, and the exception propagates."""
        return self._session.run()

    def detach(self) -> None:
        """Remove every breakpoint and let the program go on untraced."""
        self._session.abandon()

    def kill(self) -> None:
        self._session.kill()

    def stats(self) -> dict[int, Stats]:
        """Per breakpoint address: hits, steps by strategy, fall-backs and why."""
        return {bp.address: bp.stats for bp in self._session.breakpoints}


def spawn(argv: Sequence[str], mode: str = "auto", env: dict | None = None) -> Process:
    """Start `argv` (PATH is searched) under trace, stopped before its first instruction.

    `mode` is the default strategy of its breakpoints: auto, emulate, xol or reinsert."""
    from .errors import StepperError

    if mode not in MODES:
        raise StepperError(f"unknown strategy {mode!r}: choose one of {', '.join(MODES)}")
    return Process(Session.spawn(argv, mode, env))
