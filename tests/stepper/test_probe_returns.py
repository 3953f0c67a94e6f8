"""`stepper probe SPEC%return` on the `returns` tracee: every return event's entry arguments
and return value are checked against what the program printed for that call, where the
pairing is hard: four threads, recursion, a tail call, longjmp out of a frame, and a signal
handler re-entering the probed function on the same stack."""

from __future__ import annotations

import json
import re

from tests.support.runs import probe_specs


def events(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def traced(build, tmp_path, specs: list[str], mode: str):
    """Run `returns MODE` under the return probes `specs`; (program's stdout, the events)."""
    out = tmp_path / "trace.jsonl"
    run, report = probe_specs(tmp_path, specs, [build("returns"), mode], "--format", "jsonl",
                              "-o", str(out), "--quiet")
    assert run.returncode == 0, run.stderr
    assert report is not None
    found = events(out)
    assert found and all(e["event"] == "return" for e in found)
    return run.stdout, found


def calls(stdout: str, name: str) -> list[tuple[int, int]]:
    """(argument, result) of every `NAME(ARG)=RESULT` line the program printed."""
    return [(int(a), int(r)) for a, r in re.findall(rf"^{name}\((-?\d+)\)=(-?\d+)$",
                                                    stdout, re.M)]


def test_four_threads_each_return_paired_with_its_own_entry(build, tmp_path):
    stdout, found = traced(build, tmp_path, ["compute%return x=%di:s64 r=$retval:s64"],
                           "threads")
    printed = calls(stdout, "compute")
    assert len(printed) == 800
    got = [(e["args"]["x"], e["args"]["r"]) for e in found]
    assert sorted(got) == sorted(printed)
    assert all(int(e["retval"], 16) == e["args"]["r"] for e in found)
    by_thread: dict[int, list[int]] = {}
    for e in found:
        by_thread.setdefault(e["tid"], []).append(e["args"]["x"])
    assert len(by_thread) == 4
    for xs in by_thread.values():  # one worker per thread, its calls in its own order
        base = xs[0] - xs[0] % 1000
        assert xs == list(range(base, base + 200))


def test_recursion_every_level_gets_its_own_return(build, tmp_path):
    stdout, found = traced(build, tmp_path, ["fib%return n=%di:s64 r=$retval:s64"], "fib")
    fib = [0, 1]
    for _ in range(20):
        fib.append(fib[-1] + fib[-2])
    assert [(e["args"]["n"], e["args"]["r"]) for e in found] == \
        [(e["args"]["n"], fib[e["args"]["n"]]) for e in found]
    assert len(found) == 2 * fib[13] - 1   # the calls of fib(12)
    assert (found[-1]["args"]["n"], found[-1]["args"]["r"]) == calls(stdout, "fib")[0]
    assert found[-1]["duration_ns"] == max(e["duration_ns"] for e in found)


def test_tail_call_returns_once_for_both_functions(build, tmp_path):
    """tail_outer jumps to tail_inner: the one `ret` returns from both, with one value."""
    stdout, found = traced(build, tmp_path, ["tail_outer%return x=%di:s64 r=$retval:s64",
                                             "tail_inner%return y=%di:s64 r=$retval:s64"],
                           "tail")
    printed = calls(stdout, "tail_outer")
    assert printed == [(0, 2), (1, 4), (2, 6)]
    outer = [(e["args"]["x"], e["args"]["r"]) for e in found if e["probe"] == "tail_outer%return"]
    inner = [(e["args"]["y"], e["args"]["r"]) for e in found if e["probe"] == "tail_inner%return"]
    assert outer == printed
    assert inner == [(x + 1, r) for x, r in printed]


def test_longjmp_out_of_a_frame_gives_no_return_and_no_mispairing(build, tmp_path):
    stdout, found = traced(build, tmp_path, ["jumper%return i=%di:s64 r=$retval:s64",
                                             "deep%return i=%di:s64 r=$retval:s64"],
                           "longjmp")
    returned = calls(stdout, "jumper")
    jumped = [int(i) for i in re.findall(r"^longjmp from deep\((\d+)\)$", stdout, re.M)]
    assert [i for i, _ in returned] == [0, 2, 4, 6] and jumped == [1, 3, 5]
    assert [(e["args"]["i"], e["args"]["r"]) for e in found if e["probe"] == "jumper%return"] == \
        returned
    assert [(e["args"]["i"], e["args"]["r"]) for e in found if e["probe"] == "deep%return"] == \
        [(i, 3 * i) for i, _ in returned]


def test_signal_handler_reentering_the_function(build, tmp_path):
    """compute(7) raises SIGUSR1; the handler calls compute(1000) on the same stack, inside
    compute(7)'s frame: both returns are reported, each with its own argument."""
    stdout, found = traced(build, tmp_path, ["compute%return x=%di:s64 r=$retval:s64"],
                           "signal")
    printed = calls(stdout, "compute")
    handler = calls(stdout, "handler compute")
    assert [x for x, _ in printed] == [5, 6, 7, 8] and handler == [(1000, 50001)]
    got = [(e["args"]["x"], e["args"]["r"]) for e in found]
    # the handler's call ends first: it returns inside compute(7)
    assert got == [printed[0], printed[1], handler[0], printed[2], printed[3]]
    nested, outer = found[2], found[3]
    assert outer["time_ns"] - outer["duration_ns"] < nested["time_ns"] - nested["duration_ns"]
    assert nested["time_ns"] <= outer["time_ns"]
