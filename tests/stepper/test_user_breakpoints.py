"""Breakpoint rules under cont() (stepper.user_breakpoints): condition, thread scope,
temporary and ignore counts, with 4 threads calling one function 100 times each; the counts
are checked against what the program prints."""

import re

import pytest

from stepper import api
from stepper.errors import StepperError
from tests.support.elf import symbol


def _calls(out) -> dict[int, int]:
    """hammer's calls per argument, as the program counted them."""
    return {int(a): int(n) for a, n in re.findall(r"hammer (\d+): (\d+)", out.read_text())}


def _stops(proc) -> list:
    stops = []
    while (stop := proc.cont()).kind == "breakpoint":
        stops.append((stop.breakpoint, stop.thread.tid, stop.thread.regs["rdi"]))
    assert stop.kind == "exit" and stop.exit.exit_code == 3
    return stops


def test_a_condition_stops_only_where_it_holds_and_every_hit_counts(build, spawn_captured):
    exe = build("debuggee")
    proc, out = spawn_captured([exe, "threads"])
    bp = proc.break_at("debuggee:hammer", condition=lambda hit: hit.regs["rdi"] == 2)
    stops = _stops(proc)
    calls = _calls(out)
    assert len(calls) == 4
    assert all(b is bp and rdi == 2 for b, _, rdi in stops)
    assert len(stops) == calls[2]
    assert bp.hits == sum(calls.values())


def test_ignore_lets_the_first_hits_that_pass_go(build, spawn_captured):
    exe = build("debuggee")
    proc, out = spawn_captured([exe, "threads"])
    bp = proc.break_at("debuggee:hammer", condition=lambda hit: hit.regs["rdi"] == 1, ignore=3)
    stops = _stops(proc)
    assert len(stops) == _calls(out)[1] - 3
    assert bp.hits == sum(_calls(out).values())


def test_a_temporary_breakpoint_then_one_scoped_to_its_thread(build, spawn_captured):
    exe = build("debuggee")
    proc, out = spawn_captured([exe, "threads"])
    first = proc.break_at("debuggee:hammer", temporary=True)
    stop = proc.cont()
    assert stop.kind == "breakpoint" and stop.breakpoint is first and first.locations == []
    tid, arg = stop.thread.tid, stop.thread.regs["rdi"]
    proc.break_at("debuggee:hammer", thread=tid)
    stops = _stops(proc)
    assert {t for _, t, _ in stops} == {tid} and {a for _, _, a in stops} == {arg}
    # that thread's first call stopped at `first`; every later one at `mine`
    assert len(stops) == _calls(out)[arg] - 1
    assert first.hits == 1


def test_a_callback_goes_on_unless_it_returns_stop(build, spawn_captured):
    exe = build("debuggee")
    proc, out = spawn_captured([exe, "threads"])
    seen = []

    def callback(hit):
        seen.append(hit.regs["rdi"])
        return api.STOP if len(seen) % 50 == 0 else None
    bp = proc.break_at(proc.load_bias + symbol(exe, "hammer")[0], callback)
    stops = _stops(proc)
    total = sum(_calls(out).values())
    assert len(seen) == total == bp.stats.hits
    assert len(stops) == total // 50 and all(b is bp for b, _, _ in stops)


def test_under_run_a_breakpoint_without_callback_only_counts(build, spawn_captured):
    exe = build("debuggee")
    proc, out = spawn_captured([exe, "threads"])
    bp = proc.break_at("debuggee:hammer", ignore=5)
    assert proc.run().exit_code == 3
    assert bp.hits == sum(_calls(out).values()) == 400


def test_bad_specs_and_counts_are_refused_before_anything_changes(build):
    exe = build("debuggee")
    proc = api.spawn([exe, "args"])
    try:
        with pytest.raises(StepperError, match="no_such_function"):
            proc.break_at("debuggee:no_such_function")
        with pytest.raises(StepperError, match="ignore"):
            proc.break_at("debuggee:add", ignore=-1)
        assert proc.breakpoints == []
    finally:
        proc.kill()
