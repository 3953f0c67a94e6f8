"""`stepper bench --trace`, small: every row saw exactly the calls it should (counted back from
each tool's own trace), or is null with a reason; times are not judged here."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from stepper.bench.trace_report import FLOOR_RATIOS, TARGETS, floor_ratios, targets
from stepper.bench.tracee import symbol_values
from stepper.bench.tracing import ROWS, STEPPER_ARGS, floor, program
from stepper.cli import main

CALLS = 300


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "trace.json"
    assert main(["bench", "--trace", "--hits", str(CALLS), "--repeat", "1",
                 "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_every_row_is_a_figure_or_null_with_a_reason(quick):
    assert quick["schema"] == 1 and quick["calls"] == CALLS and quick["repeat"] == 1
    assert set(quick["per_call_us"]) == set(ROWS) == set(quick["best_us"])
    for key, value in quick["per_call_us"].items():
        if value is None:
            assert quick["null_reasons"][key]
        else:
            assert value > 0 and key not in quick["null_reasons"]


def test_each_measured_row_saw_every_call(quick):
    """The counts come from the tools' own output files, parsed back."""
    measured = {k: v for k, v in quick["hit_counts"].items()}
    for key in ("stepper_count", "stepper_args", "stepper_return", "stepper_fetch_deep",
                "stepper_stack_deep",    # the --stack row: CALLS stacks of 10 frames, checked
                "c_floor_count", "c_floor_args"):  # the C floor: its count, and its lines
        assert measured[key] == [CALLS], quick["null_reasons"].get(key)
    for key, tool in (("ltrace", "ltrace"), ("gdb_dprintf", "gdb"), ("uftrace", "uftrace"),
                      ("gdb_bt_deep", "gdb")):
        if shutil.which(tool) is None:
            assert "not installed" in quick["null_reasons"][key]
        else:
            assert measured[key] == [CALLS], quick["null_reasons"].get(key)


def test_targets_are_judged_from_the_figures():
    fig = dict.fromkeys(ROWS, None) | {"stepper_count": 30.0, "stepper_args": 40.0,
                                       "ltrace": 400.0, "gdb_dprintf": 150.0,
                                       "stepper_fetch_deep": 40.0, "stepper_stack_deep": 90.0}
    got = {t["target"]: (t["ratio"], t["met"]) for t in targets(fig)}
    best = {t["target"]: (t["best_ratio"], t["best_met"])
            for t in targets(fig, dict(fig, stepper_args=60.0))}
    assert best["stepper_args <= 1.5x stepper_count"] == (2.0, False)
    assert len(got) == len(TARGETS)
    assert got["stepper_args <= 1.5x stepper_count"] == (1.33, True)
    assert got["ltrace >= 5x stepper_args"] == (10.0, True)
    assert got["gdb_dprintf >= 5x stepper_args"] == (3.75, False)
    assert got["stepper_args <= 1.5x bpftrace"] == (None, None)
    assert got["stepper_stack_deep <= 2x stepper_fetch_deep"] == (2.25, False)


def test_floor_ratios_are_figures_not_goals(quick):
    fig = dict.fromkeys(ROWS, None) | {"ltrace": 110.0, "c_floor_args": 20.0,
                                       "stepper_args": 30.0, "stepper_count": 18.0}
    got = {r["ratio_of"]: (r["ratio"], r["best_ratio"])
           for r in floor_ratios(fig, dict(fig, c_floor_args=22.0))}
    assert len(got) == len(FLOOR_RATIOS)
    assert got["ltrace / c_floor_args (what a C ptrace tracer reaches)"] == (5.5, 5.0)
    assert got["stepper_args / c_floor_args"] == (1.5, 1.36)
    assert got["stepper_count / c_floor_count"] == (None, None)
    assert [set(r) for r in quick["floor_ratios"]] == [{"ratio_of", "ratio", "best_ratio"}] * 3
    assert all(t["target"] and "floor" not in t["target"] for t in quick["targets"])


def _floor_run(mode, site, symbol, out, calls):
    exe = os.path.realpath(program())
    address = symbol_values(exe, symbol)[0]
    return subprocess.run([str(floor()), mode, site, f"{address:x}", str(out), exe, str(calls)],
                          capture_output=True, timeout=60)


def test_the_c_floor_traces_the_lines_stepper_traces(tmp_path):
    """The same calls, the same text after the time and thread id: the floor does the work
    of stepper's args row, not less."""
    ours, theirs = tmp_path / "floor.out", tmp_path / "stepper.out"
    run = _floor_run("args", "work", "work", ours, 9)
    assert run.returncode == 0 and b"bench_trace_floor: hits=9\n" in run.stderr, run.stderr
    total = sum(i + ord("abgd"[i & 3]) for i in range(9))  # work(i, words[i & 3]), unchanged
    assert run.stdout == f"calls=9 sum={total}\n".encode()
    subprocess.run([sys.executable, "-m", "stepper.cli", "probe", "--quiet", "--trace", "-o",
                    str(theirs), "-p", f"bench_trace:work {STEPPER_ARGS}", "--",
                    os.path.realpath(program()), "9"], check=True, capture_output=True)
    strip = lambda p: [re.sub(r"^\d+\.\d{6} \d+ ", "", line)  # noqa: E731
                       for line in p.read_text().splitlines()]
    assert strip(ours) == strip(theirs) and len(strip(ours)) == 9
    assert 'a=8 p=0x' in strip(ours)[-1] and strip(ours)[-1].endswith('s="alpha"')


def test_the_c_floor_refuses_a_site_it_does_not_emulate(tmp_path):
    run = _floor_run("count", "work", "main", "-", 5)
    assert run.returncode == 2 and run.stdout == b""
    assert b"not movsbq (%rsi),%rax" in run.stderr and b"hits=" not in run.stderr
    once = _floor_run("count", "once", "main", "-", 5)   # the baseline: one hit on main
    assert once.returncode == 0 and b"bench_trace_floor: hits=1\n" in once.stderr


@pytest.mark.parametrize("argv", [["--plot", "x.png"], ["--load", "1"],
                                  ["--placement", "all"], ["--hits", "0"],
                                  ["--rows", "stepper_args,nope"]])
def test_bad_options_are_one_line_and_measure_nothing(argv, capsys, tmp_path):
    out = tmp_path / "never.json"
    assert main(["bench", "--trace", *argv, "--json", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and not out.exists()
