"""The protocol every step strategy implements, and what it may touch.

A hit goes: the loop calls `ops.hit(proc, thread, bp)` with the thread stopped at the
breakpoint (t.regs holds its registers, rip = bp.address). The ops either finish the
instruction (registers written back) and return None: the loop resumes the thread; or
prepare a single-step and return a `Step` record: the loop records it on the thread and
single-steps it. At the step's trap the loop calls `complete` (DONE: the loop resumes the
thread; AGAIN: it steps again, e.g. a rep string op between iterations), and if a signal
stops the step instead, `abort` (put the thread back as if at bp.address).

Ops never resume a thread and never call the engine back: what they need of the traced
process is `Traced`, a narrow view the process implements.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from .. import kernel

if TYPE_CHECKING:  # pragma: no cover
    from ..kernel import ProcMem
    from ..records import Breakpoint, Step, Thread
    from ..xol_area import XolArea

#: What `complete` returns: the step is over, or must be stepped again.
DONE = True
AGAIN = False

_REG_ITEMS = tuple(kernel.REG_INDEX.items())


class Traced(Protocol):
    """What ops may use of the traced process: its memory (/proc/PID/mem), its threads (how
    many may run), the XOL area (mapped on first need by a stopped thread) and the registry
    of boost slots."""

    mem: "ProcMem"
    threads: dict
    boost: Any

    def xol_area(self, t: "Thread") -> "XolArea": ...


def regs_dict(buf) -> dict[str, int]:
    """The emu-named registers of a ptrace buffer, as a dict (cold paths: XOL, callbacks)."""
    return {name: buf[i] for name, i in _REG_ITEMS}


def store_regs(regs: dict[str, int], buf) -> None:
    for name, i in _REG_ITEMS:
        buf[i] = regs[name]


class Ops:
    """The verbs of one step strategy; one instance per breakpoint."""

    name = "?"

    def hit(self, p: Traced, t: "Thread", bp: "Breakpoint") -> "Step | None":
        """Run (None) or prepare a single-step of (a Step) the instruction at bp.address."""
        raise NotImplementedError

    def complete(self, p: Traced, t: "Thread", bp: "Breakpoint", token) -> bool:
        """The single-step trap arrived: fix the thread up. DONE, or AGAIN: the step is not
        over (a rep iteration)."""
        return DONE

    def abort(self, p: Traced, t: "Thread", bp: "Breakpoint", token) -> None:
        """A signal stopped the step: make the thread look as if it were at bp.address."""
