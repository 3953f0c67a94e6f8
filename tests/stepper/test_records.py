"""The engine's plain records: what they compute from their fields (no process needed), and
that a thread's step in progress is one record, not loose fields."""

from __future__ import annotations

import os
import signal

import emu

from stepper import api, kernel, records


def test_stats_count_steps_by_strategy():
    stats = records.Stats(hits=5, emulate=2, xol=1, boost=1, abandoned=1,
                          fallbacks={"memory fault (write)": 1})
    assert stats.steps == {"emulate": 2, "xol": 1, "reinsert": 0, "boost": 1}
    assert stats.as_dict() == {"hits": 5, "steps": stats.steps,
                               "fallbacks": {"memory fault (write)": 1}, "abandoned": 1}
    assert stats.as_dict()["fallbacks"] is not stats.fallbacks  # a copy


def test_a_breakpoint_describes_its_site():
    insn = emu.decode(b"\x55", 0x401000)  # push rbp

    class Ops:
        name = "emulate"

    bp = records.Breakpoint(0x401000, insn, "auto", Ops())
    assert (bp.original, bp.strategy, bp.inserted) == (b"\x55", "emulate", False)
    assert bp.describe() == "0x401000: push rbp"


def test_exit_status_from_real_wait_statuses():
    assert records.ExitStatus.from_wait(3 << 8) == records.ExitStatus(3, None)
    assert records.ExitStatus.from_wait(signal.SIGKILL) == records.ExitStatus(None, signal.SIGKILL)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os._exit(7)
    assert records.ExitStatus.from_wait(os.waitpid(pid, 0)[1]) == records.ExitStatus(7, None)


def test_a_thread_starts_with_no_step_and_each_step_holds_its_own_signals():
    t = records.Thread(os.getpid(), kernel.VmAccess(os.getpid()), None)
    assert t.stepping is None and t.quiet_mask is None and t.boost_held is None
    assert not hasattr(t, "step")  # left free for a debugger's Thread.step()
    one, two = records.Step("ops", "bp"), records.Step("ops", "bp", ("token",))
    one.held.append(1)
    assert two.held == [] and two.token == ("token",)


def test_the_api_exports_the_records():
    assert (api.Breakpoint, api.Stats, api.ExitStatus, api.Hit) == (
        records.Breakpoint, records.Stats, records.ExitStatus, records.Hit)
