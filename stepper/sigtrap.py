"""The program's own SIGTRAP state (disposition and blocked mask) kept as it was across hits.

Why: the kernel raises every trap stepper uses (the INT3 of a probe, the single-step trap of
an out-of-line step) with force_sig. When SIGTRAP is blocked or ignored at that moment, the
kernel first sets its handler to SIG_DFL and unblocks it in the trapping thread
(kernel/signal.c, force_sig_info_to_task; docs/under_fire.md quotes it). stepper swallows the
trap, but the reset would stay: a probe inside a SIGTRAP handler (where SIGTRAP is blocked),
or in a program that ignores SIGTRAP, would make the program's next own SIGTRAP kill it.

The kernel keeps the action's flags, mask and restorer; only the handler is lost, and the
blocked bit. So stepper keeps one fact per process, `Session.trap_handler`, the program's
SIGTRAP handler as last seen:
- at spawn, attach and exec, from /proc/PID/status (SigIgn, SigCgt); a handler installed
  before an attach is read with an injected rt_sigaction;
- at each delivery of the program's own SIGTRAP: /proc/PID/status again, and a handler is
  read with an injected rt_sigaction before the signal goes on, with its siginfo.
While it is SIG_DFL (the common case) a hit costs nothing more. Otherwise, after each trap of
ours, /proc/PID/status tells whether the kernel reset it (a caught SIGTRAP that is no longer
caught was blocked at the trap: the handler and the blocked bit go back; an ignored one is
always reset: SIG_IGN goes back). The restore runs rt_sigaction in the stopped thread itself,
entered with PTRACE_SYSCALL (syscall stops, never a trap, so it resets nothing).

What cannot be restored (docs/under_fire.md): a reset the kernel makes leaves no trace of the
state before it, so a change the program made since stepper last looked (a SIGTRAP blocked
with sigprocmask while SIG_DFL; a handler or SIG_IGN installed and then hit before any
delivery) is unknown. When the program is then killed by its own SIGTRAP after probe hits,
one warning names the probes.
"""

from __future__ import annotations

import os
import signal
import struct
import sys
import weakref
from typing import TYPE_CHECKING

from . import kernel
from .errors import StepperError
from .xol_area import find_syscall_gadget, syscall_registers

if TYPE_CHECKING:  # pragma: no cover
    from .records import Breakpoint, Thread
    from .session import Session

SIGTRAP = signal.SIGTRAP
BIT = 1 << (SIGTRAP - 1)
SIG_DFL, SIG_IGN = 0, 1
UNKNOWN = -1  # caught, by a handler whose address stepper has not seen
SYS_RT_SIGACTION = 13
SA_RESETHAND = 0x80000000
_ACTION = struct.Struct("<QQQQ")  # struct kernel_sigaction: handler, flags, restorer, mask
_RED_ZONE = 128


def status_bits(pid: int, fd: int | None = None) -> tuple[bool, bool]:
    """(ignored, caught) for SIGTRAP in process `pid` (the dispositions are per process).
    `fd`: /proc/PID/status kept open (a pread at 0 renders it anew: a third of the cost)."""
    if fd is None:
        with open(f"/proc/{pid}/status", "rb") as f:
            data = f.read()
    else:
        data = os.pread(fd, 8192, 0)
    at = data.index(b"SigIgn:")
    ignored = int(data[at + 7:data.index(b"\n", at)], 16) & BIT
    at = data.index(b"SigCgt:")
    caught = int(data[at + 7:data.index(b"\n", at)], 16) & BIT
    return bool(ignored), bool(caught)


def _bits(s: "Session") -> tuple[bool, bool]:
    """status_bits for session `s`, through a file kept open while `s` lives."""
    fd = s.trap_status_fd
    if fd is None:
        fd = s.trap_status_fd = os.open(f"/proc/{s.pid}/status", os.O_RDONLY | os.O_CLOEXEC)
        weakref.finalize(s, os.close, fd)
    return status_bits(s.pid, fd)


def initial(pid: int) -> int:
    """The handler as /proc tells it: SIG_DFL, SIG_IGN, or UNKNOWN (caught)."""
    try:
        ignored, caught = status_bits(pid)
    except (OSError, ValueError):
        return SIG_DFL
    return SIG_IGN if ignored else UNKNOWN if caught else SIG_DFL


def learn_at_attach(s: "Session") -> None:
    """A process attached with a SIGTRAP handler: read its address (the leader is stopped)."""
    if s.trap_handler != UNKNOWN:
        return
    try:
        s.trap_handler = _action(s, s.pid)[0]
    except (StepperError, OSError):
        pass


def after_trap(s: "Session", t: "Thread", bp: "Breakpoint | None") -> None:
    """A trap of ours (at `bp`) stopped `t` in a process whose SIGTRAP is not SIG_DFL: undo
    the kernel's reset, if it made one."""
    known = s.trap_handler
    try:
        ignored, caught = _bits(s)
    except (OSError, ValueError):  # the process is gone
        return
    if caught:  # neither blocked nor ignored at the trap: the kernel changed nothing
        if known in (SIG_DFL, SIG_IGN):
            s.trap_handler = UNKNOWN  # installed since stepper last looked
        return
    if ignored:  # impossible right after a forced SIGTRAP; take the state as it is
        s.trap_handler = SIG_IGN
        return
    if known == UNKNOWN:  # reset, and the handler's address was never seen
        s.trap_handler = SIG_DFL
        where = bp.describe() if bp is not None else "?"
        warn(s, f"the program's SIGTRAP handler was reset to SIG_DFL by the kernel at probe "
                f"{where} and stepper cannot put it back (it never saw the handler's "
                f"address); its next SIGTRAP ends it")
        return
    # Sent by a program (SI_USER, SI_TKILL...), not by the CPU: its SIGTRAP was pending while
    # blocked, and the trap's own merged into it (standard signals do not queue).
    merged = kernel.getsiginfo(t.tid).code <= 0
    _set_handler(s, t.tid, known)
    if known != SIG_IGN:  # a caught SIGTRAP is reset only when it was blocked
        kernel.setsigmask(t.tid, kernel.getsigmask(t.tid) | BIT)
        if merged:  # pending again, once no step of ours is left to merge with (flush)
            s.trap_requeue.add(t.tid)


def flush(s: "Session", t: "Thread") -> None:
    """Make the program's SIGTRAP that merged with a trap of ours pending again, unless `t`
    is still in a step (its trap would merge with it in turn). tgkill: SI_TKILL, sent by
    stepper's pid; the thread keeps SIGTRAP blocked, so it waits for the unblock."""
    if t.stepping is None and t.tid in s.trap_requeue:
        s.trap_requeue.discard(t.tid)
        try:
            kernel.tgkill(s.pid, t.tid, SIGTRAP)
        except StepperError:
            pass


def deliver(s: "Session", t: "Thread") -> None:
    """Deliver the program's own SIGTRAP (stopped `t`, its siginfo set), reading its handler
    on the way: an injected rt_sigaction, after which the siginfo is set again (the thread
    is then in a signal-delivery stop of stepper's SIGSTOP, which SIGTRAP replaces)."""
    try:
        ignored, caught = _bits(s)
    except (OSError, ValueError):
        return s.resume(t, SIGTRAP)
    if not caught:
        s.trap_handler = SIG_IGN if ignored else SIG_DFL
        if not ignored:
            _warn_fatal(s)
        return s.resume(t, SIGTRAP)
    info = kernel.getsiginfo(t.tid)
    try:
        action = _action(s, t.tid)
    except StepperError:
        action = None
    kernel.setsiginfo(t.tid, info)
    if action is not None:
        handler, flags = action[0], action[1]
        s.trap_handler = SIG_DFL if flags & SA_RESETHAND else handler
    s.resume(t, SIGTRAP)


def _warn_fatal(s: "Session") -> None:
    """The program's own SIGTRAP is about to end it, at SIG_DFL: if probes were hit, the
    default may be the kernel's reset that stepper could not see coming: say so, once."""
    hit = [bp for bp in s.breakpoints if bp.stats.hits]
    if not hit:
        return
    names = ", ".join(bp.describe() for bp in hit[:3]) + (" ..." if len(hit) > 3 else "")
    warn(s, f"the program is ended by its own SIGTRAP (SIG_DFL) after probe hits ({names}); "
            f"if SIGTRAP was blocked or ignored when a probe was hit, that is the kernel's "
            f"reset, which stepper could not see (docs/under_fire.md)")


def warn(s: "Session", message: str) -> None:
    if s.trap_warned:
        return
    s.trap_warned = True
    s.warnings.append(message)  # for the JSON report too
    print(f"stepper: warning: {message}", file=sys.stderr, flush=True)


def _set_handler(s: "Session", tid: int, handler: int) -> None:
    """rt_sigaction(SIGTRAP) with `handler` and the flags, restorer and mask the kernel kept:
    those of the last restore are assumed (one injected syscall) and checked against what
    the call returns; if the program changed them meanwhile, its own are written back."""
    rest = s.trap_rest
    if rest is None:
        rest = _action(s, tid)[1:]
    old = _action(s, tid, _ACTION.pack(handler, *rest))[1:]
    if old != rest:
        _action(s, tid, _ACTION.pack(handler, *old))
    s.trap_rest = old


def _action(s: "Session", tid: int, new: bytes | None = None) -> tuple[int, ...]:
    """SIGTRAP's action before this call, which sets it to `new` (None: only read), by a
    syscall run in stopped `tid`. The two kernel_sigactions go below the red zone, where a
    signal frame could go at any time; those bytes are put back."""
    regs = kernel.new_regs()
    kernel.getregs(tid, regs)
    size = _ACTION.size
    buf = (regs[kernel.RSP] - _RED_ZONE - 2 * size) & ~0xF
    saved = s.mem.read(buf, 2 * size)
    try:
        if new is not None:
            s.mem.write(buf, new)
        result = inject(s, tid, SYS_RT_SIGACTION, SIGTRAP, buf if new else 0, buf + size, 8)
        if result >= (1 << 64) - 4095:
            raise StepperError(f"rt_sigaction(SIGTRAP) in thread {tid} failed: "
                               f"{os.strerror((1 << 64) - result)}")
        return _ACTION.unpack(s.mem.read(buf + size, size))
    finally:
        s.mem.write(buf, saved)


def inject(s: "Session", tid: int, nr: int, *args: int) -> int:
    """Run syscall `nr` in stopped thread `tid` through PTRACE_SYSCALL (its entry and exit
    stops are ptrace notifications, not SIGTRAPs, so nothing is forced on the program) and
    return its raw result; every register is restored. A signal that stops the thread first
    is queued to it again.

    The thread is left in a signal-delivery stop again (a SIGSTOP of ours, taken before it
    runs an instruction), as the engine expects: resuming from a syscall stop with a signal
    would send that signal anew (siginfo lost) instead of delivering the one set with
    PTRACE_SETSIGINFO."""
    gadget = s.trap_gadget
    if gadget is None:
        gadget = s.trap_gadget = find_syscall_gadget(s.pid, s.mem)
        if gadget is None:
            raise StepperError("no syscall instruction found to restore SIGTRAP with")
    saved, work = syscall_registers(tid, gadget, nr, args)
    pending, stops = [], 0
    try:
        while stops < 2:  # the syscall's entry stop, then its exit stop
            kernel.epoch += 1
            if kernel._ptrace(kernel.SYSCALL, tid, 0, 0) == -1:
                kernel._check(-1, "PTRACE_SYSCALL", tid)
            _, status = os.waitpid(tid, kernel.WALL)
            if not os.WIFSTOPPED(status):
                raise StepperError(f"thread {tid} ended while stepper restored its SIGTRAP")
            kernel.getregs(tid, work)
            if os.WSTOPSIG(status) == SIGTRAP and work[kernel.RIP] == gadget + 2:
                stops += 1
            else:
                pending.append(os.WSTOPSIG(status))
        return work[kernel.RAX]
    finally:
        kernel.setregs(tid, saved)
        _rearm(s, tid, pending)
        for sig in pending:
            kernel.tgkill(s.pid, tid, sig)


def _rearm(s: "Session", tid: int, pending: list[int]) -> None:
    """From a syscall stop to a signal-delivery stop: SIGSTOP, taken (and suppressed) before
    the thread runs an instruction; program signals dequeued first are added to `pending`."""
    kernel.tgkill(s.pid, tid, signal.SIGSTOP)
    while True:
        kernel.cont(tid, 0)
        _, status = os.waitpid(tid, kernel.WALL)
        if not os.WIFSTOPPED(status):
            raise StepperError(f"thread {tid} ended while stepper restored its SIGTRAP")
        if os.WSTOPSIG(status) == signal.SIGSTOP:
            return
        pending.append(os.WSTOPSIG(status))
