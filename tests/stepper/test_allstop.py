"""Stopping the world (stepper.allstop): a thread caught in the middle of an out-of-line
step or inside a boost slot is seen at the original address, never in stepper's areas, and
its hit is neither lost nor counted twice."""


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


def test_a_caught_signal_that_comes_while_the_others_stop_is_a_queued_stop(build, spawn_captured):
    import signal

    from stepper import kernel

    exe = build("debuggee")
    proc, out = spawn_captured([exe, "busy"])
    marker = proc.load_bias + symbol(exe, "marker")[0]
    first = proc.break_at(marker)
    assert proc.cont().breakpoint is first
    other = next(t.tid for t in proc.threads if t.tid != proc.pid)
    proc.remove(first)

    def at_marker(hit):
        kernel.tgkill(proc.pid, other, signal.SIGUSR1)  # pending in a thread still running
        return api.STOP
    proc.break_at(marker, at_marker)
    proc.catch(signal.SIGUSR1)
    stop = proc.cont()
    assert stop.kind == "breakpoint" and stop.thread.tid == proc.pid
    stop = proc.cont()  # the queued one: nothing ran in between
    assert stop.kind == "signal" and stop.signal == signal.SIGUSR1 and stop.thread.tid == other
    proc.remove(proc.breakpoints[-1])
    stop = proc.cont(signal=0)  # SIGUSR1 at SIG_DFL would end the program
    assert stop.kind == "exit" and stop.exit.exit_code == 3
    assert out.read_text() == "busy done\n"
