"""Where the time of one emulate hit goes, step by step.

A copy of the engine's emulate hit path (stepper.tracer.loop + strategies.emulate.EmulateOps.hit),
built from the same parts: kernel's calls on one preallocated register buffer, the
instruction's emu plan compiled for that buffer, and LiveState for memory. Between steps it
reads perf_counter_ns, and memory I/O is timed inside the VmAccess the plan writes through.
The engine itself is not instrumented, so its own figure stays clean; `engine_extra` is what
the engine's loop costs beyond this lean one (per-hit emulate figure minus `lean_total`).

Parts, in µs per hit (medians over the repeats of the per-run means):
- wait:           os.waitpid until the stop is reported: the trap, the wake-up of the tracer,
                  and the tracee's own loop between hits (a few ns here)
- get_registers:  PTRACE_GETREGS into the buffer
- bookkeeping:    finding the breakpoint, rewinding rip, counting the hit (Python)
- emulate:        the emu plan, its memory access excluded
- memory_io:      process_vm_writev/readv of the plan (push rbp: one 8-byte write)
- set_registers:  PTRACE_SETREGS
- resume:         PTRACE_CONT
- timer:          what one perf_counter_ns pair costs (already removed from each part)
"""

from __future__ import annotations

import os
import time

import emu

from .. import kernel
from ..errors import StepperError
from ..live import LiveState
from ..kernel import RIP, WALL
from .placement import Placement, place_tracee
from .runs import Sample
from .tracee import Tracee

PARTS = ("wait", "get_registers", "bookkeeping", "emulate", "memory_io", "set_registers",
         "resume")
_STOPPED_TRAP = (5 << 8) | 0x7F


class _TimedVm(kernel.VmAccess):
    """VmAccess that adds the time of each transfer to `ns`."""

    def __init__(self, pid: int) -> None:
        super().__init__(pid)
        self.ns = 0

    def read(self, address: int, size: int):
        t = time.perf_counter_ns()
        data = super().read(address, size)
        self.ns += time.perf_counter_ns() - t
        return data

    def write(self, address: int, data: bytes) -> int:
        t = time.perf_counter_ns()
        done = super().write(address, data)
        self.ns += time.perf_counter_ns() - t
        return done


def timer_cost_ns(samples: int = 20000) -> float:
    """Mean cost of one perf_counter_ns() call."""
    clock = time.perf_counter_ns
    start = clock()
    for _ in range(samples):
        clock()
    return (clock() - start) / samples


def lean_run(tracee: Tracee, iterations: int, placement: Placement) -> tuple[Sample, dict]:
    """One instrumented run with a breakpoint on `probed` (whose instruction must emulate).
    Returns the run's Sample and the summed ns of each part."""
    pid = _spawn_stopped(tracee.argv(iterations))
    mem = kernel.ProcMem(pid)
    place_tracee(placement, pid)
    original = mem.read(tracee.probe, 15)
    insn = emu.decode(original, tracee.probe)
    plan = emu.compile(insn, kernel.REG_INDEX)
    regs = kernel.new_regs()
    vm = _TimedVm(pid)
    live = LiveState(pid, regs, vm)
    mem.write(tracee.probe, b"\xcc")
    sites = {tracee.probe: [0]}
    parts = dict.fromkeys(PARTS, 0)
    clock, waitpid = time.perf_counter_ns, os.waitpid
    getregs, setregs, cont = kernel.getregs, kernel.setregs, kernel.cont
    start = clock()
    cont(pid, 0)
    while True:
        t0 = clock()
        tid, status = waitpid(pid, WALL)
        t1 = clock()
        if status != _STOPPED_TRAP:
            if os.WIFSTOPPED(status):
                cont(pid, os.WSTOPSIG(status))
                continue
            break
        getregs(tid, regs)
        t2 = clock()
        address = regs[RIP] - 1
        counter = sites.get(address)
        regs[RIP] = address
        counter[0] += 1
        t3 = clock()
        io_before = vm.ns
        plan(live)
        t4 = clock()
        setregs(tid, regs)
        t5 = clock()
        cont(tid, 0)
        t6 = clock()
        io = vm.ns - io_before
        parts["wait"] += t1 - t0
        parts["get_registers"] += t2 - t1
        parts["bookkeeping"] += t3 - t2
        parts["emulate"] += t4 - t3 - io
        parts["memory_io"] += io
        parts["set_registers"] += t5 - t4
        parts["resume"] += t6 - t5
    total = clock() - start
    mem.close()
    return Sample(sites[tracee.probe][0], total), parts


def _spawn_stopped(argv: list[str]) -> int:
    """Fork and exec `argv` under trace (python-ptrace, as the engine does), stopped at its
    exec: the lean loop owns this tracee entirely, so it does not go through a Session."""
    from ptrace.debugger.child import createChild

    pid = createChild(argv, False, None, close_fds=False)
    _, status = os.waitpid(pid, WALL)
    if not os.WIFSTOPPED(status):
        raise StepperError(f"{argv[0]} ended before it could be traced")
    kernel.setoptions(pid, kernel.O_EXITKILL)
    return pid


def per_hit_parts(parts: dict, hits: int, timer_ns: float) -> dict:
    """Summed part times -> µs per hit, each without the timer's own cost."""
    return {name: max(parts[name] / hits - timer_ns, 0.0) / 1000 for name in PARTS}
