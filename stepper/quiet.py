"""Quiet steps: a single-step that an asynchronous signal cannot starve.

When a signal interrupts an out-of-line step (XOL, or a boost slot's first byte), stepper may
hold the signal and finish the instruction first, delivering the signal right after it: an
instruction boundary that an asynchronous signal may hit unprobed. But the single-step only
runs if no other signal is pending when the thread resumes; the kernel otherwise stops it for
that signal before the instruction. A signal that arrives more often than the tracer's round
trip (SIGALRM every 50 µs, with only one thread left to take it) is always pending again, and
the thread never gets past the probe: a livelock that showed on an idle machine.

So the held step runs with the thread's asynchronous signals blocked (PTRACE_SETSIGMASK) and
the program's own mask is put back at the step's stop, before anything else happens: signals
that arrive meanwhile stay pending (standard ones merged, as the kernel merges them anyway;
real-time ones queued) and are delivered after the instruction, by the kernel, as usual.

Never blocked:
- SIGTRAP, SIGSEGV, SIGBUS, SIGILL, SIGFPE: the instruction's own trap or fault. The kernel
  forces those, and forcing a blocked signal resets the program's handler to SIG_DFL.
- SIGKILL and SIGSTOP, which cannot be blocked.
Not quiet at all: an instruction that enters the kernel (`syscall`, `int`, `sysenter`), since a
blocking system call must stay interruptible (pause() waits for exactly such a signal).
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

from capstone import x86_const as X

from . import kernel

if TYPE_CHECKING:  # pragma: no cover
    import emu

_NEVER_BLOCKED = (signal.SIGTRAP, signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE,
                  signal.SIGKILL, signal.SIGSTOP)
#: Every signal 1..64 but those above.
QUIET_MASK = ((1 << 64) - 1) & ~sum(1 << (s - 1) for s in _NEVER_BLOCKED)


def can_quiet(insn: "emu.Instruction") -> bool:
    """Whether `insn` may be stepped with signals blocked (it does not enter the kernel)."""
    cs = insn.capstone
    return not (cs.group(X.X86_GRP_INT) or cs.id in (X.X86_INS_SYSCALL, X.X86_INS_SYSENTER))


def step(t, sig: int = 0) -> None:
    """Single-step stopped thread `t` with its asynchronous signals blocked; `end(t)` at its
    next stop puts the program's mask back."""
    if t.quiet_mask is None:
        saved = kernel.getsigmask(t.tid)
        kernel.setsigmask(t.tid, saved | QUIET_MASK)
        t.quiet_mask = saved
    t.running = True
    kernel.singlestep(t.tid, sig)


def end(t) -> None:
    """Give stopped thread `t` its own signal mask back (nothing if it was not quiet)."""
    saved = t.quiet_mask
    if saved is not None:
        t.quiet_mask = None
        kernel.setsigmask(t.tid, saved)
