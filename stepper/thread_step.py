"""A debugger's instruction step: exactly one instruction of one stopped thread while every
other thread stays stopped (`t.step()`, `proc.trace_instructions`).

First the emulator, when it can run the instruction on the live thread with no trap at all
(`_emulate_one`); else a real PTRACE_SINGLESTEP. With every other thread stopped, an INT3
under the thread's rip is simply taken out for the step and put back: no other thread can
run past it meanwhile. A signal that arrives during the step is delivered (the step then
ends at its handler's first instruction) unless it is caught: then it is the Stop. A clone,
fork or exec on the way is followed as the loop would.
"""

from __future__ import annotations

import signal as signals
from typing import Any, Iterator

from . import (detach, instruction_step, kernel, sigtrap, stops, tracer, user_breakpoints,
               watchpoints)
from .debug_stop import Stop
from .errors import StepperError
from .kernel import RIP
from .records import ExitStatus, Thread


def step(state: Any, h: Any) -> Stop:
    """One instruction of `h`'s thread (the others stay stopped): by the emulator when it
    can, else a real single-step."""
    if state.finished is not None or state.root.loop_thread is not None:
        state.check_stopped()  # raises
    t = h._thread
    p = t.session
    if h._regs is not None:
        h.flush()
        h._regs = None
    tid = t.tid
    sig = 0
    if tid in state.held:
        kind, value = state.held.pop(tid)
        sig = value if kind == "signal" else 0
        info = state.siginfo.pop(tid, None)
        if sig and info is not None:
            kernel.setsiginfo(tid, info)
    if not sig and _emulate_one(p, t):
        # No SETREGS here: the registers stay in t.regs, written once when the thread
        # next runs (a real step, cont(), detach: State.dirty).
        state.dirty.add(tid)
        state.stats.emulated += 1
        stop = h._stepped  # a Stop is immutable: one per thread serves every emulated step
        if stop is None:
            stop = h._stepped = Stop("step", h)
        state.last = stop
        return stop
    state.dirty.discard(tid)  # _single_step writes them
    stop = _single_step(state, p, t, h, sig)
    if stop.kind == "step":
        state.stats.trapped += 1
    return state._give(stop)

def _single_step(state: Any, p: Any, t: Thread, h: Any, sig: int) -> Stop:
    """A real PTRACE_SINGLESTEP, the INT3 under rip taken out for it (every other
    thread is stopped, so none can run past it meanwhile)."""
    address = t.regs[RIP]
    bp = p.breakpoints.by_address.get(address)
    if bp is not None and bp.inserted:
        p.mem.write(address, bp.original)
    kernel.setregs(t.tid, t.regs)
    try:
        return _step_wait(state, p, t, h, sig)
    finally:
        if bp is not None and bp.inserted and not p.closed:
            try:
                p.mem.write(address, b"\xcc")
            except (OSError, StepperError):
                pass

def _step_wait(state: Any, p: Any, t: Thread, h: Any, sig: int) -> Stop:
    while True:
        t.running = True
        kernel.singlestep(t.tid, sig)
        sig = 0
        status = detach._next_status(p, t)
        t.running = False
        stop = stops.decode(status)
        if not stop.stopped:
            p.gone(t, status)
            if not state.root.threads:
                return state._exited()
            return Stop("exit", h, exit=ExitStatus.from_wait(status))
        if stop.event == "clone":
            tracer.cloned(p, kernel.geteventmsg(t.tid))
        elif stop.event in ("fork", "vfork"):
            tracer.forked(p, t, kernel.geteventmsg(t.tid), stop.event == "vfork")
        elif stop.event == "exec":
            p.exec(t)
            user_breakpoints.exec_happened(p)
            kernel.getregs(t.tid, t.regs)
            return Stop("exec", state.handle(t))
        elif stop.event is not None:
            continue
        elif stop.signal == signals.SIGTRAP:
            if p.trap_handler:  # the step's trap is forced, as an INT3 is
                sigtrap.after_trap(p, t, None)
                sigtrap.flush(p, t)
            kernel.getregs(t.tid, t.regs)
            hits = watchpoints.fired(p, t) if p.watchpoints else []
            if hits:  # the stepped instruction touched watched memory
                return Stop("watchpoint", h, watchpoint=hits[0].watchpoint, watch=hits[0])
            return Stop("step", h)
        elif stop.signal == signals.SIGSTOP and t.stop_sent:
            t.stop_sent = False
        elif stop.signal in state.caught_signals:
            state.held[t.tid] = ("signal", stop.signal)
            kernel.getregs(t.tid, t.regs)
            return Stop("signal", h, signal=stop.signal)
        else:
            sig = stop.signal  # delivered: the step stops at the handler's first insn

def trace(state: Any, h: Any, until: int | None) -> Iterator[int]:
    """Step `h` and yield each executed instruction's address until rip == `until`
    (or the thread stops for another reason)."""
    while True:
        address = h._thread.regs[RIP]
        if address == until:
            return
        stop = step(state, h)
        yield address
        if stop.kind != "step":
            return


def _emulate_one(p: Any, t: Thread) -> bool:
    """Run the instruction at t's rip in the emulator (no trap); False: not done here.
    Every other thread is stopped, so even a locked instruction may be emulated (not on a
    shared mapping: stepper.instruction_step). A watched access, or an instruction under an
    execute watchpoint, is left to the CPU so the debug registers see it."""
    if not p.watchpoints:  # the common case: no guard to build
        return instruction_step.emulate_one(p, t, True)
    if p.watch_exec and any(w.access == "x" and w.address == t.regs[RIP]
                            for w in p.watchpoints):
        return False
    return instruction_step.emulate_one(p, t, True, watchpoints.guard(p, t))
