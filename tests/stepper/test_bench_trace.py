"""`stepper bench --trace`, small: every row saw exactly the calls it should (counted back from
each tool's own trace), or is null with a reason; times are not judged here."""

from __future__ import annotations

import json
import shutil

import pytest

from stepper.bench.trace_report import TARGETS, targets
from stepper.bench.tracing import ROWS
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
                "stepper_stack_deep"):   # the --stack row: CALLS stacks of 10 frames, checked
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


@pytest.mark.parametrize("argv", [["--plot", "x.png"], ["--load", "1"],
                                  ["--placement", "all"], ["--hits", "0"],
                                  ["--rows", "stepper_args,nope"]])
def test_bad_options_are_one_line_and_measure_nothing(argv, capsys, tmp_path):
    out = tmp_path / "never.json"
    assert main(["bench", "--trace", *argv, "--json", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and not out.exists()
