"""Quiet steps (stepper.stepping) on a real stopped thread: a signal already pending does not cut
the single-step short, and the program's signal mask is back once the step has stopped."""

from __future__ import annotations

import os
import signal

import pytest

from stepper import kernel, stepping
from stepper.kernel import RIP, WALL


@pytest.fixture
def stopped_thread(build, spawn_captured):
    """The layout tracee at its SIGSTOP (just after the raise() system call), and its Thread."""
    proc, _ = spawn_captured([build("layout")])
    session = proc._session
    kernel.cont(session.pid)
    _, status = os.waitpid(session.pid, WALL)
    assert os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGSTOP
    return session.threads[session.pid]


def _next_stop(tid: int) -> tuple[int, int]:
    _, status = os.waitpid(tid, WALL)
    assert os.WIFSTOPPED(status)
    return os.WSTOPSIG(status), _rip(tid)


def test_a_pending_signal_stops_a_plain_step_before_it_runs(stopped_thread):
    """The premise: without the mask, the step never begins while a signal is pending (a
    storm that always has one pending starves it)."""
    t = stopped_thread
    before = _rip(t.tid)
    kernel.tgkill(t.session.pid, t.tid, signal.SIGUSR1)
    kernel.singlestep(t.tid)
    assert _next_stop(t.tid) == (signal.SIGUSR1, before)


def test_a_quiet_step_runs_and_the_signal_follows_it(stopped_thread):
    t = stopped_thread
    before = _rip(t.tid)
    mask = kernel.getsigmask(t.tid)
    kernel.tgkill(t.session.pid, t.tid, signal.SIGUSR1)
    stepping.quiet_step(t)
    sig, rip = _next_stop(t.tid)
    assert sig == signal.SIGTRAP and rip != before  # the instruction ran
    assert kernel.getsiginfo(t.tid).code > 0  # the kernel's step trap, not a kill
    stepping.end_quiet(t)
    assert kernel.getsigmask(t.tid) == mask and t.quiet_mask is None
    kernel.cont(t.tid)
    assert _next_stop(t.tid) == (signal.SIGUSR1, rip)  # still pending: delivered next


def _rip(tid: int) -> int:
    regs = kernel.new_regs()
    kernel.getregs(tid, regs)
    return regs[RIP]
