"""The exit table of `stepper probe`: sorted by hits, zero-hit rows folded into one line, the
sites of one function summed (IFUNC implementations, the statement starts of a FILE:LINE),
every site with the engine's details under --verbose, one table per process under
--per-process; the JSON keeps every site. Real runs of the `family` tracee (whose processes
print how many times they called f) and of ls."""

from __future__ import annotations

import re
import subprocess
from collections import defaultdict
from pathlib import Path

from tests.support.programs import TRACEES
from tests.support.runs import probe_specs

ROW = re.compile(r"^\s*([\d,]+)  (\S+)\s+(\S+)\s+(\S+)(?: \((\d+) sites\))?$")


def probe(tmp_path, specs: list[str], argv: list[str], *options: str):
    run, report = probe_specs(tmp_path, specs, argv, *options, timeout=180)
    assert run.returncode == subprocess.run(argv, capture_output=True).returncode, run.stderr
    assert report is not None, run.stderr
    return run.stderr.splitlines(), report, run.stdout


def rows(lines: list[str]) -> list[tuple]:
    """(hits, spec, object, symbol, sites) of the default table's rows."""
    out = []
    for line in lines:
        m = ROW.match(line)
        if m:
            out.append((int(m[1].replace(",", "")), m[2], m[3], m[4], int(m[5] or 1)))
    return out


def groups(report: dict) -> dict:
    """(spec, object, group) -> [hits, sites], from the JSON's every-site list."""
    result: dict = defaultdict(lambda: [0, 0])
    for p in report["probes"]:
        entry = result[(p["spec"], p["object"], p["group"])]
        entry[0] += p["hits"]
        entry[1] += 1
    return result


def test_sorted_by_hits_and_zero_rows_folded(build, tmp_path):
    exe = build("family")
    lines, report, _ = probe(tmp_path, ["never", "main", "report", "f"], [exe])
    assert lines[:5] == [
        "hits  spec    object  symbol",
        "  11  f       family  f",
        "   3  report  family  report",
        "   1  main    family  main",
        "1 probe not hit: never"]
    assert re.fullmatch(r"steps: emulate 15; 3 processes, 3 threads; "
                        r"\d+\.\d{3} s traced wall time", lines[5])
    assert lines[6:] == ["program exited with 3"]
    assert [p["spec"] for p in report["probes"]] == ["never", "main", "report", "f"]


def test_glob_and_ifunc_rows_sum_their_sites(tmp_path):
    lines, report, _ = probe(tmp_path, ["libc.so.6:strlen", "libc.so.6:str*"], ["ls", "/"])
    table = rows(lines)
    expected = groups(report)
    assert len(table) >= 3 and all(hits > 0 for hits, *_ in table)
    assert [r[0] for r in table] == sorted((r[0] for r in table), reverse=True)
    for hits, spec, obj, symbol, sites in table:
        assert expected[(spec, obj, symbol)] == [hits, sites]
    strlen = next(r for r in table if r[1] == "libc.so.6:strlen")
    assert strlen[4] > 1   # the implementations of the IFUNC, one row
    idle = sum(1 for hits, _ in expected.values() if hits == 0)
    assert idle > 0 and f"{idle:,} probes not hit" in lines
    assert len(table) + idle == len(expected)


def test_verbose_lists_every_site_with_engine_details(tmp_path):
    lines, report, _ = probe(tmp_path, ["libc.so.6:strlen", "libc.so.6:strc*"], ["ls", "/"],
                             "--verbose")
    assert lines[0].split() == ["hits", "spec", "object", "symbol", "address", "instruction",
                                "strategy", "boost"]
    body = [line for line in lines[1:] if re.match(r"^\s*[\d,]+  ", line)]
    assert len(body) == len(report["probes"])   # zero-hit sites listed too, nothing folded
    hits = [int(line.split()[0].replace(",", "")) for line in body]
    assert hits == sorted(hits, reverse=True) and 0 in hits
    for p in report["probes"]:
        assert any(p["address"] in line and p["symbol"] in line for line in body)
    assert not any("probes not hit" in line for line in lines)


def test_statement_starts_of_one_line_are_one_row(build, tmp_path):
    exe = build("family")
    source = (TRACEES / "family.c").read_text().splitlines()
    line = next(i for i, text in enumerate(source, 1) if "done = f(done)" in text)
    spec = f"family.c:{line}"
    lines, report, _ = probe(tmp_path, [spec], [exe])
    sites = [p for p in report["probes"] if p["spec"] == spec]
    assert len(sites) > 1
    (hits, _, obj, symbol, count), = rows(lines)
    assert (hits, obj, count) == (sum(p["hits"] for p in sites), "family", len(sites))
    assert hits > 11 and symbol == "calls"


def test_per_process_gives_each_process_its_table(build, tmp_path):
    exe = build("family")
    lines, report, stdout = probe(tmp_path, ["f", "never"], [exe], "--per-process")
    printed = {int(p): int(n) for p, n in re.findall(r"pid=(\d+) f=(\d+)", stdout)}
    heads = [i for i, line in enumerate(lines) if line.startswith("process ")]
    assert len(heads) == len(report["processes"]) == 3
    for start, end in zip(heads, heads[1:] + [len(lines) - 2]):
        pid = int(lines[start].split()[1])
        assert rows(lines[start + 1:end]) == [(printed[pid], "f", "family", "f", 1)]
        assert lines[end - 1] == "  1 probe not hit: never"
    assert "exited with 7" in "\n".join(lines[h] for h in heads)
    assert Path(exe).name in lines[heads[0]]
