"""`stepper bench`: the quick mode (--hits 200, one repeat, placement same) on this machine's
real tracees, tracers and peers. Checks hit counts and the report's shape, never timings."""

from __future__ import annotations

import json
import math
import os
import shutil
from importlib.util import find_spec

import pytest

from stepper import api
from stepper.bench import KEYS, STRATEGIES, load, placement, report
from stepper.bench.breakdown import PARTS
from stepper.bench.debugger_rows import STEP_KEYS, STOP_KEYS, THREAD_KEYS
from stepper.bench.tracee import VARIANTS
from stepper.cli import main

HITS = 200
STEPS = 300


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    code = main(["bench", "--hits", str(HITS), "--repeat", "1", "--placement", "same",
                 "--startup-repeat", "0", "--steps", str(STEPS), "--json", str(out)])
    assert code == 0
    return json.loads(out.read_text())


def test_report_has_the_issue_keys(quick):
    assert quick["schema"] == 1   # docs/schema.md
    assert set(quick["per_hit_us"]) == set(KEYS)
    assert set(quick["placements"]) == {"same"}
    assert set(quick["placements"]["same"]) == set(KEYS)
    assert quick["hits"] == HITS and quick["repeat"] == 1
    assert set(quick["variants"]) == set(VARIANTS)
    for row in quick["variants"].values():
        assert set(row) == set(STRATEGIES)
    assert set(PARTS) <= set(quick["breakdown_us"])
    assert quick["colocated"] == {}  # only unpinned runs are watched


def _figures(r):
    """(path, value, reason) of every figure in the report."""
    yield from ((("per_hit_us", k), v, r["null_reasons"]["per_hit_us"].get(k))
                for k, v in r["per_hit_us"].items())
    for p, row in r["placements"].items():
        yield from ((("placements", p, k), v, r["null_reasons"]["placements"][p].get(k))
                    for k, v in row.items())
    for var, row in r["variants"].items():
        yield from ((("variants", var, k), v, r["null_reasons"]["variants"][var].get(k))
                    for k, v in row.items())


def test_every_figure_is_a_number_or_null_with_a_reason(quick):
    for path, value, reason in _figures(quick):
        if value is None:
            assert isinstance(reason, str) and reason and "\n" not in reason, path
        else:
            assert isinstance(value, float) and math.isfinite(value), path
            assert reason is None, path


def test_no_figure_is_zero_or_negative(quick):
    """200 hits is where the noise of a whole run outweighs a figure (gdb_dprintf came out at
    -387 µs): such a figure is null with its reason (checked above), never a number <= 0."""
    assert [path for path, value, _ in _figures(quick) if value is not None and value <= 0] == []


def test_a_figure_inside_its_noise_is_null_with_the_reason():
    from stepper.bench.harness import Results

    results = Results()
    results.us[("same", "gdb_dprintf")] = [-387.0]        # one repeat, below zero
    results.us[("same", "gdb")] = [40.0, 2.0, 90.0]       # spread 88 µs over a median of 40
    results.us[("same", "xol")] = [0.004]                 # 0.00 once rounded
    results.us[("same", "emulate")] = [3.0, 3.3, 3.1]     # spread 0.3 µs: a measurement
    for key in ("gdb_dprintf", "gdb", "xol"):
        assert results.median("same", key) is None, key
        assert results.reason("same", key, "not measured").startswith("noise: "), key
    assert results.reason("same", "gdb", "-") == ("noise: median 40.0 µs per hit, spread of "
                                                   "the 3 repeats 88.0 µs; measure with more "
                                                   "--hits or --repeat")
    assert results.median("same", "emulate") == 3.1
    assert results.reason("same", "emulate", "not measured") == "not measured"
    assert not results.failed("same", "gdb")   # noise is judged at the end, not per repeat


def test_every_measured_figure_saw_exactly_the_expected_hits(quick):
    counts = quick["hit_counts"]
    for path, value, _ in _figures(quick):
        if path[0] == "per_hit_us" or value is None:
            continue
        scope = path[1]  # the push_rbp variant row is the variant placement's figures
        scope = quick["variant_placement"] if scope == "push_rbp" else scope
        assert counts[scope][path[2]] == [HITS], path


def _measured(report, key) -> bool:
    """The figure ran: a number, or null only because 200 hits of one repeat left it inside
    the noise of a busy machine (a failure or a missing tool has another reason)."""
    same = report["placements"]["same"]
    reason = report["null_reasons"]["placements"]["same"].get(key, "")
    return same[key] is not None or reason.startswith("noise: ")


def test_the_strategies_and_c_floor_were_measured(quick):
    for key in ("auto", "emulate", "xol", "reinsert", "c_floor", "c_floor_xol"):
        assert _measured(quick, key), quick["null_reasons"]["placements"]["same"].get(key)
    if "boost" not in api.MODES:
        assert quick["placements"]["same"]["boost"] is None
        assert quick["null_reasons"]["per_hit_us"]["boost"] == "boost strategy not implemented"
    else:
        assert _measured(quick, "boost")


def test_peers_measured_where_installed(quick):
    if shutil.which("gdb"):
        assert _measured(quick, "gdb") and _measured(quick, "gdb_dprintf")
    if find_spec("libdebug"):
        assert _measured(quick, "libdebug"), quick["null_reasons"]["per_hit_us"].get("libdebug")


def test_variants_probe_their_instruction(quick):
    ins = quick["instructions"]
    assert ins["push_rbp"] == "push rbp"
    assert ins["mov"].startswith("mov ") and "rip" not in ins["mov"]
    assert ins["sub_rsp"].startswith("sub rsp, ")
    assert "[rip + " in ins["rip_relative"]
    declined = quick["variants"]["declined"]
    reasons = quick["null_reasons"]["variants"]
    assert declined["emulate"] is None
    assert declined["xol"] is not None or reasons["declined"]["xol"].startswith("noise: ")
    assert "not emulated" in reasons["declined"]["emulate"]
    assert ins["undefined_flags"].startswith("imul")
    for variant in ("push_rbp", "mov", "sub_rsp", "rip_relative", "undefined_flags"):
        assert quick["variants"][variant]["emulate"] is not None \
            or reasons[variant]["emulate"].startswith("noise: "), variant


def test_table_names_every_figure_and_the_targets(quick):
    text = report.table(quick)
    for key in KEYS:
        assert f"\n{key} " in text
    assert "targets (same placement):" in text
    if quick["per_hit_us"]["boost"] is None:
        assert "boost strategy not implemented" in text


def test_targets_are_judged_from_the_figures():
    fig = dict.fromkeys(KEYS)
    fig.update(emulate=2.0, c_floor=1.0, xol=8.0, gdb=30.0, libdebug=10.0)
    r = {"per_hit_us": fig, "placements": {"same": fig, "free+policy": {"emulate": 2.5},
                                           "same+load": {"emulate": 4.0},
                                           "free+policy+load": {"emulate": 8.0}},
         "breakdown_us": {"wait": 9.0, "emulate": 0.5, "memory_io": 0.7}}
    verdicts = {t["target"]: (t["ratio"], t["met"]) for t in report.targets(r)}
    assert verdicts["emulate <= 1.3x c_floor"] == (2.0, False)
    assert verdicts["xol >= 3x emulate"] == (4.0, True)
    assert verdicts["boost <= 1.2x emulate"] == (None, None)
    assert verdicts["gdb >= 10x emulate"] == (15.0, True)
    assert verdicts["libdebug >= 6x emulate"] == (5.0, False)
    assert verdicts["free+policy emulate <= 1.5x same"] == (1.25, True)
    assert verdicts["free+policy+load emulate <= 1.5x same+load"] == (2.0, False)
    missed = [t for t in report.targets(r) if t["met"] is False]
    assert missed and all(t["dominant"].startswith("memory_io (0.7 µs") for t in missed)


def test_debugger_rows_saw_every_stop_and_step(quick):
    rows, reasons = quick["debugger_us"], quick["null_reasons"]["debugger_us"]
    assert set(rows) == {*STOP_KEYS, *THREAD_KEYS, *STEP_KEYS}
    assert quick["debugger_placement"] == "same" and quick["steps"] == STEPS
    for key, value in rows.items():
        if value is None:
            assert isinstance(reasons[key], str) and reasons[key] and "\n" not in reasons[key]
            continue
        assert value > 0, key
        expected = STEPS if key in STEP_KEYS else HITS
        assert quick["hit_counts"]["debugger"][key] == [expected], key
    for key in ("cont", "cont_threads", "step", "engine_step", "c_singlestep"):  # ours, C
        assert rows[key] is not None, reasons.get(key)
    if shutil.which("gdb"):
        assert None not in (rows["gdb_continue"], rows["gdb_continue_threads"],
                            rows["gdb_stepi"]), reasons
    if find_spec("libdebug"):
        assert None not in (rows["libdebug_cont"], rows["libdebug_cont_threads"],
                            rows["libdebug_step"]), reasons
    text = report.table(quick)
    assert "debugger API (same)" in text and all(f"\n{k} " in text for k in rows)


def test_the_step_target_is_judged_against_the_c_loop():
    r = {"per_hit_us": dict.fromkeys(KEYS), "placements": {}, "breakdown_us": {},
         "debugger_us": {"step": 4.0, "c_singlestep": 30.0}}
    verdicts = {t["target"]: (t["ratio"], t["met"]) for t in report.targets(r)}
    assert verdicts["t.step() >= 5x faster than C singlestep"] == (7.5, True)
    r["debugger_us"]["step"] = 10.0
    verdicts = {t["target"]: (t["ratio"], t["met"]) for t in report.targets(r)}
    assert verdicts["t.step() >= 5x faster than C singlestep"] == (3.0, False)


def test_auto_is_measured_as_the_strategy_it_chose(quick):
    """`auto` beside the forced strategies: it emulates what the emulator runs live and
    boosts what it declines (paddq), and the table names the choice and the ratio to boost."""
    chosen = quick["auto_strategy"]
    assert chosen["declined"] == "boost"
    for variant in ("push_rbp", "mov", "sub_rsp", "rip_relative", "undefined_flags"):
        assert chosen[variant] == "emulate", variant
    assert quick["stores"] == ["push_rbp"]
    assert set(PARTS) <= set(quick["variant_breakdown_us"]["rip_relative"])
    text = report.table(quick)
    assert "auto is" in text and "auto/boost" in text


def test_auto_against_boost_is_judged_on_variants_without_a_store():
    fig = dict.fromkeys(KEYS)
    r = {"per_hit_us": fig, "placements": {"same": fig}, "stores": ["push_rbp"],
         "variants": {"push_rbp": {"auto": 20.0, "boost": 16.0},
                      "mov": {"auto": 16.4, "boost": 16.0},
                      "rip_relative": {"auto": 19.0, "boost": 16.0},
                      "declined": {"auto": 16.0, "boost": None}},
         "breakdown_us": {"wait": 9.0, "memory_io": 2.5},
         "variant_breakdown_us": {"rip_relative": {"wait": 9.0, "memory_io": 2.2, "emulate": 0.4}}}
    verdicts = {t["target"]: (t["ratio"], t["met"]) for t in report.targets(r)}
    notes = {t["target"]: t.get("dominant") for t in report.targets(r)}
    assert notes["auto <= 1.05x boost (rip_relative)"].startswith("memory_io (2.2 µs")
    assert notes["auto <= 1.05x boost (mov)"] is None
    assert verdicts["auto <= 1.05x boost (mov)"] == (1.02, True)
    assert verdicts["auto <= 1.05x boost (rip_relative)"] == (1.19, False)
    assert verdicts["auto <= 1.05x boost (declined)"] == (None, None)
    assert not any("push_rbp" in t for t in verdicts)
    assert report.store_gaps(r) == [{"variant": "push_rbp", "auto": 20.0, "boost": 16.0,
                                     "gap_us": 4.0, "ratio": 1.25, "memory_io_us": 2.5}]


@pytest.mark.parametrize("argv, message", [
    (["--hits", "0"], "--hits must be at least 1"),
    (["--repeat", "0"], "--repeat must be at least 1"),
    (["--load", "-1"], "--load must be 0 or more"),
    (["--steps", "0"], "--steps must be at least 1"),
    (["--plot", "chart.jpg"], "PNG"),
    (["--plot", "/nonexistent/chart.png"], "cannot write /nonexistent/chart.png"),
    (["--startup-repeat", "-1"], "--startup-repeat must be at least 0"),
    (["--startup-only", "--startup-repeat", "0"], "--startup-repeat must be at least 1"),
])
def test_bad_input_is_one_line_and_measures_nothing(argv, message, capsys, tmp_path):
    out = tmp_path / "never.json"
    assert main(["bench", *argv, "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_last_cpu_reads_field_39_after_the_command_name():
    assert placement.last_cpu(os.getpid()) in os.sched_getaffinity(0)


def test_watching_colocation_changes_no_affinity():
    before = os.sched_getaffinity(0)
    proc = api.spawn(["/bin/true"])
    proc.placement = "none"
    with placement.Colocation(proc.pid):
        assert os.sched_getaffinity(0) == before
        proc.run()
    assert os.sched_getaffinity(0) == before


def test_unknown_placement_is_refused():
    with pytest.raises(Exception, match="unknown placement"):
        placement.resolve("elsewhere")


def _children() -> set[int]:
    """The live children of this process, from every thread's /proc children list."""
    found: set[int] = set()
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/children") as f:
            found |= {int(p) for p in f.read().split()}
    return found


def test_load_runs_busy_loops_for_the_block_and_kills_them_on_an_exception():
    before = _children()
    with pytest.raises(RuntimeError, match="measurement failed"):
        with load.busy(2) as pids:
            assert len(pids) == 2 and set(pids) <= _children() - before
            for pid in pids:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    assert f.read().split(b") ")[1][:1] in b"RS"  # alive, not a zombie
            raise RuntimeError("measurement failed")
    assert _children() == before
    assert not any(os.path.exists(f"/proc/{pid}") for pid in pids)


def test_bench_with_load_measures_the_loaded_rows_and_leaves_no_process(tmp_path):
    before = _children()
    out = tmp_path / "load.json"
    assert main(["bench", "--hits", str(HITS), "--repeat", "1", "--placement", "free",
                 "--load", "1", "--startup-repeat", "0", "--steps", str(STEPS), "--json", str(out)]) == 0
    assert _children() == before
    r = json.loads(out.read_text())
    assert r["load"] == 1
    assert {"free", "free+policy", "free+load", "free+policy+load"} <= set(r["placements"])
    for scope in ("free+load", "free+policy+load"):
        assert r["hit_counts"][scope]["emulate"] == [HITS]


def test_startup_figures_are_measured_warm_and_cold(tmp_path, capsys):
    out = tmp_path / "startup.json"
    assert main(["bench", "--startup-only", "--startup-repeat", "1", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert set(r) == {"startup"}
    s = r["startup"]
    assert s["repeat"] == 1 and s["program"] == "/bin/true"
    for state in ("warm", "cold"):
        figures = s["stepper"][state]
        assert set(figures) == {"help", "one_probe", "all_probes", "all_over_one"}
        assert all(isinstance(v, float) for v in figures.values())
        assert figures["help"] > 0 and figures["all_probes"] > 0
        samples = s["stepper"][state + "_samples"]
        assert figures["all_probes"] == samples["all"][0]
    table = capsys.readouterr().out
    assert table.startswith("start-up, s (wall, median of 1;")
    assert "one probe, added to the program" in table and "goal" in table
