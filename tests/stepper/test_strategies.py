"""The step strategies (stepper.strategies) on a real thread stopped at a real breakpoint,
driven by hand instead of by the loop: an op only edits registers and memory and returns its
verdict (None: the instruction ran; a Step: single-step it); it never resumes the thread."""

from __future__ import annotations

import os
import signal

import pytest

from tests.support.elf import symbol
from stepper import kernel, policy, procfs
from stepper.kernel import RIP, WALL
from stepper.records import Step
from stepper.strategies import base
from stepper.strategies.boost import BoostOps
from stepper.strategies.emulate import EmulateOps
from stepper.strategies.reinsert import ReinsertOps
from stepper.strategies.xol import XolOps


def _at_breakpoint(build, spawn_captured, mode):
    """(session, thread, bp): the execer tracee stopped at the INT3 on `f`, rip on it."""
    exe = build("execer")
    proc, _ = spawn_captured([exe], mode)
    bp = proc.break_at(proc.load_bias + symbol(exe, "f")[0])
    s = proc._session
    t = s.threads[s.pid]
    kernel.cont(t.tid)
    _, status = os.waitpid(t.tid, WALL)
    assert os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGTRAP
    kernel.getregs(t.tid, t.regs)
    assert t.regs[RIP] == bp.address + 1
    t.regs[RIP] = bp.address
    return s, t, bp


def _still_stopped(t) -> bool:
    return os.waitpid(t.tid, WALL | os.WNOHANG) == (0, 0) and procfs.in_trace_stop(t.tid)


def _rip(tid: int) -> int:
    regs = kernel.new_regs()
    kernel.getregs(tid, regs)
    return regs[RIP]


@pytest.mark.parametrize("mode, kind", [("emulate", EmulateOps), ("xol", XolOps),
                                        ("reinsert", ReinsertOps), ("boost", BoostOps)])
def test_policy_gives_each_mode_its_module(build, spawn_captured, mode, kind):
    s, t, bp = _at_breakpoint(build, spawn_captured, mode)
    assert isinstance(bp.ops, kind) and isinstance(bp.ops, base.Ops)


def test_emulate_runs_the_instruction_and_leaves_the_thread_stopped(build, spawn_captured):
    s, t, bp = _at_breakpoint(build, spawn_captured, "emulate")
    assert bp.ops.hit(s, t, bp) is None
    assert _still_stopped(t)
    assert _rip(t.tid) == bp.insn.next_address and bp.stats.emulate == 1


@pytest.mark.parametrize("mode", ["xol", "reinsert"])
def test_a_step_verdict_is_completed_by_whoever_steps_it(build, spawn_captured, mode):
    s, t, bp = _at_breakpoint(build, spawn_captured, mode)
    step = bp.ops.hit(s, t, bp)
    assert isinstance(step, Step) and step.ops is bp.ops and step.bp is bp and step.held == []
    assert _still_stopped(t) and t.stepping is None  # recorded and stepped by the loop only
    kernel.singlestep(t.tid)
    _, status = os.waitpid(t.tid, WALL)
    assert os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGTRAP
    assert step.ops.complete(s, t, bp, step.token) is base.DONE
    assert _rip(t.tid) == bp.insn.next_address


def test_boost_jumps_into_its_slot_and_returns_no_step(build, spawn_captured):
    s, t, bp = _at_breakpoint(build, spawn_captured, "boost")
    ops = bp.ops
    assert ops.slot is not None and ops.name == "boost"  # written at insertion
    assert s.boost.locate(ops.slot) is not None
    assert ops.hit(s, t, bp) is None
    assert _still_stopped(t) and _rip(t.tid) == ops.slot


def test_a_refused_boost_steps_out_of_line_without_rebinding_its_methods(build, spawn_captured):
    s, t, bp = _at_breakpoint(build, spawn_captured, "boost")
    ops = BoostOps(bp.insn)
    ops.refuse("for the test")
    assert (ops.name, ops.note) == ("xol", "not boosted: for the test")
    assert "hit" not in vars(ops)
    step = ops.hit(s, t, bp)
    assert isinstance(step, Step) and step.ops is ops.xol
    assert policy.why(bp).startswith("boosted") or policy.why(bp).startswith("not boosted")


def test_registers_round_trip_through_a_dict():
    buf = kernel.new_regs()
    for i, name in enumerate(kernel.REG_INDEX):
        buf[kernel.REG_INDEX[name]] = i + 1
    regs = base.regs_dict(buf)
    other = kernel.new_regs()
    base.store_regs(regs, other)
    assert list(other) == [buf[i] if i in kernel.REG_INDEX.values() else 0
                           for i in range(len(buf))]
