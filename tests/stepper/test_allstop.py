"""Stopping the world (stepper.allstop): a thread caught in the middle of an out-of-line
step or inside a boost slot is seen at the original address, never in stepper's areas, and
its hit is neither lost nor counted twice."""

import re

import pytest

from stepper import api, maps
from tests.support.elf import instructions, symbol


@pytest.mark.parametrize("mode", ["xol", "boost"])
def test_other_threads_are_seen_in_the_program_s_own_code(build, spawn_captured, mode):
    if mode not in api.MODES:
        pytest.skip(f"no {mode} strategy")
    exe = build("debuggee")
    proc, out = spawn_captured([exe, "busy"])
    site = instructions(exe, "busy")[1]  # lea (%rax,%rdi,8),%rax: stepped out of line
    busy_calls = []
    busy = proc.break_at(proc.load_bias + site.address, lambda hit: busy_calls.append(1), mode)
    assert busy.strategy == mode
    marker = proc.break_at(proc.load_bias + symbol(exe, "marker")[0])
    text = [m for m in maps.read(proc.pid) if m.path == exe]
    in_areas = 0
    stops = 0
    while (stop := proc.cont()).kind == "breakpoint":
        assert stop.breakpoint is marker
        stops += 1
        for t in proc.threads:
            rip = t.regs["rip"]
            where = maps.find(maps.read(proc.pid), rip)
            if where is None or not where.is_file:
                in_areas += 1
            elif where in text:
                # in the program's own code: on an instruction boundary of what it runs
                assert rip - proc.load_bias in _starts(exe) or rip == busy.address
    assert stop.kind == "exit" and stop.exit.exit_code == 3
    assert in_areas == 0
    assert stops == 200 and "busy done" in out.read_text()
    # a step cut short by a stop is the same hit when the thread comes back to it: one
    # callback, one count
    assert busy.stats.hits == len(busy_calls)


_cache: dict = {}


def _starts(exe: str) -> set[int]:
    if exe not in _cache:
        _cache[exe] = {i.address for f in ("busy", "busying", "marker", "main")
                       for i in instructions(exe, f)}
    return _cache[exe]
