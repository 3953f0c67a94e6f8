"""`stepper probe` with fetch arguments, filters and the trace stream, on the tracework tracee:
every value is checked against what the program printed itself."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.support.runs import ended, probe_specs

CALLS = 12
ENTRY = "work a=%di:s64 s=+0(%si):string u=%dx:u32 first=+0(%si):x8"


def printed(stdout: str) -> list[dict]:
    """The calls as the program printed them."""
    calls = []
    for line in stdout.splitlines():
        m = re.fullmatch(r"call a=(-?\d+) s=(.*) u=(\d+)", line)
        if m:
            calls.append({"a": int(m.group(1)), "s": m.group(2), "u": int(m.group(3))})
    return calls


def jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_jsonl_values_are_what_the_program_passed(build, tmp_path):
    exe = build("tracework")
    out = tmp_path / "trace.jsonl"
    run, report = probe_specs(tmp_path, [ENTRY, "take p=+0(%di):string q=%di c=$comm "
                                                "g=@gauge:u16 at=%ip:symbol ret=$stack0:symbol"],
                              [exe, str(CALLS)], "--format", "jsonl", "-o", str(out))
    assert run.returncode == CALLS, run.stderr
    calls = printed(run.stdout)
    assert len(calls) == CALLS
    events = jsonl(out)
    work = [e for e in events if e["probe"] == "work"]
    assert [e["args"]["a"] for e in work] == [c["a"] for c in calls]
    assert [e["args"]["s"] for e in work] == [c["s"] for c in calls]
    assert [e["args"]["u"] for e in work] == [c["u"] for c in calls]
    assert [e["args"]["first"] for e in work] == [
        hex(c["s"].encode()[0]) if c["s"] else "0x0" for c in calls]
    for e in work:
        assert set(e) == {"time_ns", "pid", "tid", "probe", "symbol", "address", "event",
                          "args"}
        assert e["event"] == "entry" and e["symbol"] == "work" and e["tid"] == e["pid"]
        assert e["address"].startswith("0x")
    assert [e["time_ns"] for e in work] == sorted(e["time_ns"] for e in work)
    take = [e for e in events if e["probe"] == "take"]
    # a fault is null; gauge is 0x1234; the thread's name is the program's file name
    assert take == [dict(take[0], args={"p": None, "q": "0x10", "c": "tracework", "g": 0x1234,
                                        "at": "take", "ret": take[0]["args"]["ret"]})]
    assert take[0]["args"]["ret"].startswith("main+0x")   # the return address, in main
    assert report["schema"] == 1
    assert report["trace"] == [{"probe": "work", "event": "entry", "count": CALLS},
                               {"probe": "take", "event": "entry", "count": 1}]


def test_register_and_string_probe_values_are_what_the_program_passed(build, tmp_path):
    """Registers and strings only: the observer path (no Hit made), the same values."""
    exe = build("tracework")
    out = tmp_path / "trace.jsonl"
    run, _ = probe_specs(tmp_path, ["work a=%di:s64 s=+0(%si):string u=%dx:u32 c=$comm"],
                         [exe, str(CALLS)], "--format", "jsonl", "-o", str(out))
    assert run.returncode == CALLS, run.stderr
    calls = printed(run.stdout)
    assert [e["args"] for e in jsonl(out)] == [dict(c, c="tracework") for c in calls]


def test_strings_at_a_page_end_and_across_pages(build, tmp_path):
    exe = build("tracework")
    out = tmp_path / "t.jsonl"
    run, _ = probe_specs(tmp_path, ["edge a=%di:string b=+0(%si):string"], [exe, "1"],
                         "--format", "jsonl", "-o", str(out), "--quiet")
    assert run.returncode == 1
    a, b = re.search(r"^edge a=(.*) b=(.*)$", run.stdout, re.M).groups()
    assert [e["args"] for e in jsonl(out)] == [{"a": a, "b": b}]


def test_text_trace_on_stderr_with_a_filter(build, tmp_path):
    exe = build("tracework")
    run, report = probe_specs(tmp_path, [ENTRY + ' if a > 0 and s != "x"'],
                              [exe, str(CALLS)], "--trace", "--quiet")
    assert run.returncode == CALLS
    expected = [c for c in printed(run.stdout) if c["a"] > 0 and c["s"] != "x"]
    lines = [line for line in run.stderr.splitlines() if " work: " in line]
    assert len(lines) == len(expected) > 0
    for line, call in zip(lines, expected):
        assert re.match(r"\d+\.\d{6} \d+ work: ", line)
        assert f"a={call['a']} " in line and f"u={call['u']} " in line
        assert 's="' + call["s"].replace('"', '\\"') + '"' in line
    assert report["trace"][0]["count"] == len(expected)
    assert report["probes"][0]["hits"] == CALLS   # the filter drops events, not hits


def test_max_hits_removes_the_probe_and_the_program_runs_on(build, tmp_path):
    exe = build("tracework")
    out = tmp_path / "t.jsonl"
    run, report = probe_specs(tmp_path, ["work a=%di:s64"], [exe, "50"], "--max-hits", "3",
                              "--format", "jsonl", "-o", str(out))
    assert run.returncode == 50
    assert run.stdout == subprocess.run([exe, "50"], capture_output=True, text=True).stdout
    assert [e["args"]["a"] for e in jsonl(out)] == [c["a"] for c in printed(run.stdout)[:3]]
    assert report["probes"][0]["hits"] == 3   # removed: no hit after the third


def test_chrome_trace_loads_with_one_complete_event_per_call(build, tmp_path):
    exe = build("tracework")
    out = tmp_path / "trace.json"
    run, _ = probe_specs(tmp_path, ["work a=%di:s64 s=+0(%si):string"], [exe, str(CALLS)],
                         "--format", "chrome", "-o", str(out), "--quiet")
    assert run.returncode == CALLS
    data = json.loads(out.read_text())
    complete = [e for e in data["traceEvents"] if e["ph"] == "X"]
    assert len(complete) == CALLS
    assert [e["args"]["a"] for e in complete] == [c["a"] for c in printed(run.stdout)]
    assert all(e["name"] == "work" and e["dur"] >= 0 for e in complete)
    names = {e["name"] for e in data["traceEvents"] if e["ph"] == "M"}
    assert names == {"process_name", "thread_name"}


def test_hist_in_the_report_and_the_table(build, tmp_path):
    exe = build("tracework")
    run, report = probe_specs(tmp_path, ["work u=%dx:u32"], [exe, str(CALLS)], "--hist", "u")
    assert run.returncode == CALLS
    rows = report["trace"][0]["hist"]["u"]
    values = [c["u"] for c in printed(run.stdout)]
    assert sum(r[2] for r in rows) == len(values)
    for low, high, count in rows:
        assert count == sum(1 for v in values if low <= v < high)
    assert "@u:" in run.stderr and "[0]" in run.stderr


def test_string_argument_over_pid(build, tmp_path):
    exe = build("tracework")
    out = tmp_path / "t.jsonl"
    prog = subprocess.Popen([exe, "5", "wait"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    with ended(prog):
        assert prog.stdout.readline() == "ready\n"
        tracer = subprocess.Popen(
            [sys.executable, "-m", "stepper.cli", "probe", "--pid", str(prog.pid),
             "-p", "work s=+0(%si):string", "--format", "jsonl", "-o", str(out)],
            stderr=subprocess.PIPE, text=True)
        with ended(tracer):
            line = tracer.stderr.readline()
            assert "attached to" in line, line
            prog.stdin.write("g")
            prog.stdin.flush()
            rest = prog.stdout.read()
            assert prog.wait(timeout=60) == 5
            assert tracer.wait(timeout=60) == 5   # stepper ends as the program did
    assert [e["args"]["s"] for e in jsonl(out)] == [c["s"] for c in printed(rest)]


BAD = {
    "work a=%zz": "unknown register %zz (character 9)",
    "work $params:u8": "$params takes no NAME= or :TYPE",
    "work a=+8(%di": "unclosed '(' (character 10)",
    "work a=%di:u7": "unknown type 'u7'",
    "work $retval": "$retval is only for return probes",
    "work a=%di if a >": "filter: syntax error",
    "work a=%di if b == 1": "filter: unknown name 'b'",
    "work a=%di if open('x')": "call is not allowed in a filter",
    "nosuch a=%di": "nosuch",
}


@pytest.mark.parametrize("text", sorted(BAD))
def test_bad_probe_is_one_line_and_nothing_starts(build, tmp_path, text):
    exe = build("tracework")
    marker = tmp_path / "ran"
    out = tmp_path / "never.jsonl"
    run = subprocess.run(
        [sys.executable, "-m", "stepper.cli", "probe", "-p", text, "--format", "jsonl",
         "-o", str(out), "--", "sh", "-c", f"touch {marker}; {exe}"],
        capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert run.stderr.startswith("stepper: error: ") and run.stderr.count("\n") == 1
    assert BAD[text] in run.stderr, run.stderr
    assert not marker.exists() and not out.exists()


@pytest.mark.parametrize("name, message", [("b", "--hist b: no probe fetches 'b'"),
                                           ("s", "--hist s: 's' is not a number")])
def test_hist_of_an_unknown_or_string_name_is_refused(build, name, message):
    run = subprocess.run([sys.executable, "-m", "stepper.cli", "probe", "-p",
                          "work a=%di s=%si:string", "--hist", name, "--", build("tracework")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and message in run.stderr and run.stderr.count("\n") == 1


def test_two_probes_on_one_spec_keep_their_own_filters_and_counts(build, tmp_path):
    exe = build("tracework")
    run, report = probe_specs(tmp_path, ["work a=%di:s64 if a < 0", "work a=%di:s64 if a > 0"],
                              [exe, str(CALLS)], "--quiet")
    calls = printed(run.stdout)
    assert [t["count"] for t in report["trace"]] == [
        sum(c["a"] < 0 for c in calls), sum(c["a"] > 0 for c in calls)]


@pytest.mark.parametrize("spec", ["work a=%di", "work%return a=%di"])
def test_duration_stops_tracing_and_stepper_ends_as_the_program(build, tmp_path, spec):
    """After --duration the program runs on untraced to its own end: for a return probe,
    the return address's INT3 (which lingers between calls) went with the rest."""
    exe = build("tracework")
    run, report = probe_specs(tmp_path, [spec], [exe, "4000000"], "--duration",
                              "0.5", "--quiet")
    assert run.returncode == 4000000 % 256
    assert run.stdout.endswith(subprocess.run([exe, "4000000"], capture_output=True,
                                              text=True).stdout.splitlines()[-1] + "\n")
    assert report["detached"] is True and 0 < report["probes"][0]["hits"] < 4000000


def test_interval_prints_the_summary_while_the_program_runs(build, tmp_path):
    exe = build("tracework")
    # a run far longer than the interval: --duration ends the tracing after 1 s
    run, report = probe_specs(tmp_path, ["work u=%dx:u32"], [exe, "3000000"], "--hist", "u",
                              "--interval", "0.2", "--duration", "1")
    assert run.returncode == 3000000 % 256
    blocks = re.findall(r"^stepper: \d\d:\d\d:\d\d\nwork: ([\d,]+) hits\n  @u:", run.stderr,
                        re.M)
    assert len(blocks) >= 1
    counts = [int(b.replace(",", "")) for b in blocks]
    assert counts == sorted(counts) and counts[-1] <= report["trace"][0]["count"]


def test_one_option_with_two_elements_is_two_probes(build, tmp_path):
    exe = build("tracework")
    run, report = probe_specs(tmp_path, [], [exe, "3"], "--quiet", "-p", "work a=%di:s64",
                              "take")
    assert run.returncode == 3
    # take only counts: it is in the table, not among the traced probes' summaries
    assert [(t["probe"], t["count"]) for t in report["trace"]] == [("work", 3)]
    assert {p["spec"]: p["hits"] for p in report["probes"]} == {"work": 3, "take": 1}


def test_return_probe_pairs_entry_arguments_with_the_return_value(build, tmp_path):
    """`work%return`: one "return" event per call, with the arguments fetched at the entry,
    $retval and the duration; the return found by thread and stack pointer."""
    exe = build("tracework")
    out = tmp_path / "trace.jsonl"
    run, report = probe_specs(
        tmp_path, ["work%return a=%di:s64 s=+0(%si):string u=%dx:u32 r=$retval:s64",
                   "work%return if retval > 20"],
        [exe, str(CALLS)], "--format", "jsonl", "-o", str(out), "--hist", "duration_ns")
    assert run.returncode == CALLS, run.stderr
    calls = printed(run.stdout)
    events = jsonl(out)
    paired = [e for e in events if "r" in e["args"]]
    assert [e["event"] for e in events] == ["return"] * len(events)
    assert [(e["args"]["a"], e["args"]["s"], e["args"]["u"]) for e in paired] == [
        (c["a"], c["s"], c["u"]) for c in calls]
    want = [c["a"] + len(c["s"]) + c["u"] for c in calls]
    assert [e["args"]["r"] for e in paired] == want  # s64, as asked
    assert [int(e["retval"], 16) for e in paired] == want  # the event's own: x64
    assert all(e["duration_ns"] >= 0 for e in paired)
    filtered = [e for e in events if "r" not in e["args"]]
    assert [int(e["retval"], 16) for e in filtered] == [w for w in want if w > 20]
    latency = [row for row in report["trace"] if "latency_ns" in row]
    assert latency and latency[0]["latency_ns"]["count"] == CALLS
