"""Signals during a step: what the engine does when a signal, and not the step's trap, stops a
thread in the middle of a probed instruction, and the facts it keeps for that.

The rules (docs/under_fire.md):
- A fault of the instruction itself (`synchronous`: SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP
  raised by the CPU, si_code > 0) is its outcome, as unprobed: delivered, the hit counted.
- Any other signal that comes before the instruction ran abandons the step (`abandoned`): the
  thread is put back at the breakpoint and gets the signal there; the hit is counted when the
  handler returns and the thread hits the breakpoint again (recognised by `returning`).
- A signal held for the step (the second one that would abandon it) waits in the Step record
  and is queued again afterwards (`requeue`: tgkill, the signal number kept), its siginfo
  copied first (`copy_info`) since the kernel's buffer is reused by the next stop.
"""

from __future__ import annotations

import ctypes
import signal
from typing import TYPE_CHECKING

from . import kernel
from .errors import StepperError
from .kernel import RSP

if TYPE_CHECKING:  # pragma: no cover
    from .records import Breakpoint, Thread

#: Signals an instruction raises itself (with si_code > 0: sent by the kernel, not a program).
FAULTS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGTRAP)


def synchronous(sig: int, info: kernel.Siginfo) -> bool:
    """A fault the instruction itself raised (it must be delivered before it, in place)."""
    return info.code > 0 and sig in FAULTS


def siginfo(tid: int) -> kernel.Siginfo | None:
    """The stopped thread's siginfo, or None (a group-stop has none)."""
    try:
        return kernel.getsiginfo(tid)
    except StepperError:
        return None


def copy_info(info: kernel.Siginfo) -> kernel.Siginfo:
    copy = kernel.Siginfo()
    ctypes.memmove(ctypes.addressof(copy), ctypes.addressof(info), ctypes.sizeof(copy))
    return copy


def requeue(t: "Thread", infos: list) -> None:
    """Queue signals to thread `t` again (tgkill: the signal number is kept, its siginfo
    becomes SI_TKILL). Used only for a second signal held during one step, or on detach."""
    for info in infos:
        try:
            kernel.tgkill(t.session.pid, t.tid, info.signo)
        except StepperError:
            pass


def abandoned(t: "Thread", bp: "Breakpoint") -> None:
    """The step at `bp` was abandoned (a signal arrived first): the thread is back at
    bp.address and will hit it again; that hit is the one counted."""
    bp.stats.hits -= 1
    bp.stats.abandoned += 1
    t.abandons += 1
    if t.rehit is None:
        t.rehit = []
    t.rehit.append((bp.address, t.regs[RSP]))


def returning(t: "Thread", address: int) -> bool:
    """Whether this hit is `t` coming back to a step it abandoned for a signal (same
    address, same stack pointer: the handler has returned). Marks are a stack: a handler can
    itself be interrupted mid-step. A hit inside a handler runs below the signal frame, so
    marks above the stack pointer are kept; a mark at or below it that does not match is a
    handler that never returned there (longjmp): dropped."""
    now = t.regs[RSP]
    marks = t.rehit
    found = False
    while marks and marks[-1][1] <= now:
        where, rsp = marks.pop()
        if where == address and rsp == now:
            found = True
            break
    if not marks:
        t.rehit = None
    return found
