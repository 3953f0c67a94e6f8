"""Signals during a step: one home for what happens when a signal, and not the step's trap,
stops a thread in the middle of a probed instruction (an out-of-line step, or a boost slot's
first instruction), and for the facts kept for it. The model is the kernel's uprobes: one
per-task state machine for a step and its signals (kernel/events/uprobes.c).

The rules (docs/under_fire.md):
- A fault of the instruction itself (`synchronous`: SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP
  raised by the CPU, si_code > 0) is its outcome, as unprobed: delivered, the hit counted.
- Any other signal that comes before the instruction ran abandons the step (`abandoned`): the
  thread is put back at the breakpoint and gets the signal there; the hit is counted when the
  handler returns and the thread hits the breakpoint again (recognised by `returning`).
- But a step abandoned already is finished first, the signal held in the Step record and
  delivered right after the instruction (an instruction boundary an asynchronous signal may
  hit unprobed): a signal storm faster than a step must not stop the program's progress. The
  same holds for a boost slot's first instruction (`boost_stopped`).

Quiet steps: a held step runs with the thread's asynchronous signals blocked
(PTRACE_SETSIGMASK), and the program's own mask is put back at the step's stop, before
anything else happens. Without it, the single-step only runs if no other signal is pending
when the thread resumes; a signal that arrives more often than the tracer's round trip
(SIGALRM every 50 µs) is always pending again and the thread never gets past the probe.
Never blocked: SIGTRAP, SIGSEGV, SIGBUS, SIGILL, SIGFPE (the instruction's own trap or fault:
the kernel forces those, and forcing a blocked signal resets the program's handler to
SIG_DFL), SIGKILL and SIGSTOP. Not quiet at all: an instruction that enters the kernel
(`syscall`, `int`, `sysenter`), since a blocking system call must stay interruptible.
"""

from __future__ import annotations

import ctypes
import signal
from typing import TYPE_CHECKING, Any

from capstone import x86_const as X

from . import kernel, sigtrap, watchpoints
from .errors import StepperError
from .kernel import RIP, RSP, TRAP_TRACE

if TYPE_CHECKING:  # pragma: no cover
    import emu

    from .records import Breakpoint, Step, Thread

SIGTRAP = signal.SIGTRAP
#: Signals an instruction raises itself (with si_code > 0: sent by the kernel, not a program).
FAULTS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGTRAP)
_NEVER_BLOCKED = (*FAULTS, signal.SIGKILL, signal.SIGSTOP)
#: Every signal 1..64 but those above.
QUIET_MASK = ((1 << 64) - 1) & ~sum(1 << (s - 1) for s in _NEVER_BLOCKED)
#: Slot kinds whose single-step ends inside the slot (or at the jump back), where the held
#: signal's stop is recognised; `ret`/`jmp r/m` end in the program's code, `pushf` would
#: push the step's TF.
_HOLDABLE = ("plain", "jump")


# --- resuming ---------------------------------------------------------------------------

def resume(t: "Thread", sig: int = 0) -> None:
    """Let `t` run on (a thread in the middle of a step is stepped on, not continued)."""
    t.running = True
    if t.stepping is not None:
        kernel.singlestep(t.tid, sig)
    else:
        kernel.cont(t.tid, sig)


def single_step(t: "Thread", step: "Step") -> None:
    """Record `step` on `t` and single-step it."""
    t.stepping = step
    t.running = True
    kernel.singlestep(t.tid)


def resume_stepped(p: Any, t: "Thread", held: list | None = None) -> None:
    """Resume `t` after its probed instruction completed, delivering the signals held for
    it. A program running with TF set expects the CPU's single-step trap after that
    instruction: deliver it (TRAP_TRACE, si_addr = the next instruction, as the kernel
    reports a #DB single-step)."""
    t.abandons = 0
    if not t.tf and not held:
        return resume(t)
    deliver = list(held) if held else []
    if t.tf:
        t.tf = 0
        info = kernel.getsiginfo(t.tid)
        info.signo, info.errno, info.code = SIGTRAP, 0, TRAP_TRACE
        info.addr = t.regs[RIP]
        deliver.insert(0, info)
    requeue(t, deliver[1:])
    kernel.setsiginfo(t.tid, deliver[0])
    if deliver[0].signo == SIGTRAP:
        return sigtrap.deliver(p, t)  # the program's trap: its handler is noted
    resume(t, deliver[0].signo)


# --- quiet steps ------------------------------------------------------------------------

def can_quiet(insn: "emu.Instruction") -> bool:
    """Whether `insn` may be stepped with signals blocked (it does not enter the kernel)."""
    cs = insn.capstone
    return not (cs.group(X.X86_GRP_INT) or cs.id in (X.X86_INS_SYSCALL, X.X86_INS_SYSENTER))


def quiet_step(t: "Thread", sig: int = 0) -> None:
    """Single-step stopped thread `t` with its asynchronous signals blocked; `end_quiet(t)`
    at its next stop puts the program's mask back."""
    if t.quiet_mask is None:
        saved = kernel.getsigmask(t.tid)
        kernel.setsigmask(t.tid, saved | QUIET_MASK)
        t.quiet_mask = saved
    t.running = True
    kernel.singlestep(t.tid, sig)


def end_quiet(t: "Thread") -> None:
    """Give stopped thread `t` its own signal mask back (nothing if it was not quiet)."""
    saved = t.quiet_mask
    if saved is not None:
        t.quiet_mask = None
        kernel.setsigmask(t.tid, saved)


# --- signals ----------------------------------------------------------------------------

def synchronous(sig: int, info: kernel.Siginfo) -> bool:
    """A fault the instruction itself raised (it must be delivered before it, in place)."""
    return info.code > 0 and sig in FAULTS


def copy_info(info: kernel.Siginfo) -> kernel.Siginfo:
    """A copy of `info` (the kernel's buffer is read anew at every stop)."""
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


# --- the step's stop --------------------------------------------------------------------

def step_stopped(p: Any, t: "Thread", sig: int) -> None:
    """`t`, in a step (t.stepping), stopped with `sig`: complete the step at its trap, else
    deliver the instruction's own fault, hold the signal, or abandon the step."""
    step = t.stepping
    ops, bp, token = step.ops, step.bp, step.token
    t.stepping = None
    if sig == SIGTRAP and kernel.getsiginfo(t.tid).code > 0:
        if p.watch_exec and watchpoints.refired(p, t, bp.address):
            return single_step(t, step)  # an "x" watchpoint on the instruction stepped in place
        if ops.complete(p, t, bp, token):
            if p.watchpoints:  # the instruction ran on the CPU: its watch trap is this one
                watchpoints.fired(p, t)
            if p.trap_handler:  # the step's trap, forced like the INT3
                sigtrap.after_trap(p, t, bp)
                resume_stepped(p, t, step.held)
                return sigtrap.flush(p, t)
            return resume_stepped(p, t, step.held)
        return single_step(t, step)
    # A fault of the instruction itself: the hit happened (the instruction ran and
    # faulted, as unprobed). Any other signal came before the step ran: abandon it;
    # but a step abandoned already is finished first (a signal storm faster than a
    # step must not stop the program's progress) and the signal delivered right
    # after the instruction, which an asynchronous signal may equally hit.
    info = kernel.getsiginfo(t.tid)
    fault = synchronous(sig, info)
    if not fault and t.abandons:
        step.held.append(copy_info(info))
        t.stepping = step
        if can_quiet(bp.insn):  # no further signal can cut the step short
            return quiet_step(t)
        return resume(t)  # steps on, the signal suppressed for now
    ops.abort(p, t, bp, token)
    if not fault:
        abandoned(t, bp)
    return resume(t, sig)


def settle(p: Any, t: "Thread", sig: int = SIGTRAP) -> None:
    """Finish (step trap) or abort (any other stop) a step in progress: the detach's way,
    which never resumes the thread."""
    step = t.stepping
    if step is None:
        return
    end_quiet(t)
    ops, bp, token = step.ops, step.bp, step.token
    t.stepping = None
    if sig != SIGTRAP or not ops.complete(p, t, bp, token):
        ops.abort(p, t, bp, token)
        if sig != SIGTRAP:
            bp.stats.hits -= 1
            bp.stats.abandoned += 1
    elif p.trap_handler:  # the step's trap is forced, as the INT3 was
        sigtrap.after_trap(p, t, bp)
        sigtrap.flush(p, t)
    requeue(t, step.held)  # signals held for the step: kept pending for the program


# --- boost slots ------------------------------------------------------------------------

def boost_stopped(p: Any, t: "Thread", sig: int) -> int | None:
    """A stop that is not a hit nor a step's, in a process with boost slots: returns the
    signal to resume `t` with, or None when this resumed `t` itself.

    A RIP inside a slot is mapped back. A thread put back on the probe (the instruction
    has not run, or a rep op is part done) hits it again when it resumes: that hit is the
    one counted, as for an abandoned XOL step. But an asynchronous signal that finds the
    thread at the slot's first byte is held for one instruction: the thread single-steps
    the slot first, quietly, and the signal is delivered after it, with its own siginfo.
    Otherwise a signal coming faster than a hit costs the tracer (SIGALRM every 50 us) would
    be pending at every re-hit, or at the held step, and the thread would never get past the
    probe."""
    held = t.boost_held
    if held is not None:
        t.boost_held = None
        return _release(p, t, sig, held)
    regs = t.regs
    kernel.getregs(t.tid, regs)
    plan = p.boost.locate(regs[RIP])
    if plan is None:
        return sig
    if (sig and regs[RIP] == plan.slot_address and plan.kind in _HOLDABLE
            and can_quiet(plan.instruction)):
        info = kernel.siginfo_if_any(t.tid)
        if info is not None and not synchronous(sig, info):
            t.boost_held = [copy_info(info)]
            quiet_step(t)  # no further signal can cut the step short
            return None
    _map(p, t, plan, sig)
    return sig


def _map(p: Any, t: "Thread", plan, sig: int) -> None:
    """Map `t`'s RIP (in t.regs) out of `plan`'s slot. Back on the probe, the hit is
    abandoned (hit again, counted then) unless the instruction itself faulted: that is
    its outcome, as unprobed, and a handler returning to it runs it (and hits) anew."""
    rip = t.regs[RIP]
    t.regs[RIP] = plan.original_address(rip)
    kernel.setregs(t.tid, t.regs)
    info = kernel.siginfo_if_any(t.tid) if sig else None
    if info is not None:
        p.boost.fix_siginfo(t.tid, plan, rip, sig, info)
        if synchronous(sig, info):
            return
    if t.regs[RIP] == plan.instruction.address:
        bp = p.breakpoints.by_address.get(plan.instruction.address)
        if bp is not None:
            abandoned(t, bp)


def _release(p: Any, t: "Thread", sig: int, held: list) -> int | None:
    """The stop after held signals' single-step: deliver them now."""
    regs = t.regs
    kernel.getregs(t.tid, regs)
    plan = p.boost.locate(regs[RIP])
    info = kernel.siginfo_if_any(t.tid) if sig else None
    if sig == SIGTRAP and info is not None and info.code > 0:
        # The step's trap: the instruction ran. The first held signal goes now with its
        # own siginfo, any other is sent again (as by tgkill: its siginfo is lost).
        if plan is not None:
            _map(p, t, plan, 0)
        if p.watchpoints:  # the slot's instruction ran on the CPU: its watch trap is this one
            watchpoints.fired(p, t)
        if p.trap_handler:  # the step's trap is forced, as the INT3 was
            address = plan.instruction.address if plan is not None else None
            sigtrap.after_trap(p, t, p.breakpoints.by_address.get(address))
            sigtrap.flush(p, t)
        for other in held[1:]:
            kernel.tgkill(p.pid, t.tid, other.signo)
        kernel.setsiginfo(t.tid, held[0])
        return held[0].signo
    if (plan is not None and regs[RIP] == plan.slot_address and info is not None
            and not synchronous(sig, info)):
        # Another signal was pending before the step could run: hold it too (a standard
        # signal already held is pending once, as the kernel would keep it) and step.
        if sig >= signal.SIGRTMIN or all(h.signo != sig for h in held):
            held.append(copy_info(info))
        t.boost_held = held
        quiet_step(t)
        return None
    # The instruction faulted (or the step was otherwise cut short): that signal goes
    # now, with the RIP mapped back, and the held ones are sent again.
    if plan is not None:
        _map(p, t, plan, sig)
    for other in held:
        kernel.tgkill(p.pid, t.tid, other.signo)
    return sig
