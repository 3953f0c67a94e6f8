"""`stepper bench --trace`: the runs in rotated order, the medians, the targets, the table and
the JSON report (docs/schema.md, "bench --trace"). The rows are in stepper.bench.tracing."""

from __future__ import annotations

from typing import Callable

from ..errors import StepperError
from ..output import SCHEMA
from .harness import Group, Results, measure_group, per_hit_figure, rotate
from .placement import applied, resolve
from .report import _cell, _grid, machine
from .tracing import ROWS, rows, workdir

SCOPE = "trace"
#: (description, numerator, denominator, bound, "max"|"min"): ratio = numerator / denominator.
TARGETS = (
    ("stepper_args <= 1.5x stepper_count", "stepper_args", "stepper_count", 1.5, "max"),
    ("ltrace >= 5x stepper_args", "ltrace", "stepper_args", 5.0, "min"),
    ("ltrace_L >= 5x stepper_args", "ltrace_L", "stepper_args", 5.0, "min"),
    ("gdb_dprintf >= 5x stepper_args", "gdb_dprintf", "stepper_args", 5.0, "min"),
    ("stepper_args <= 1.5x bpftrace", "stepper_args", "bpftrace", 1.5, "max"),
)


def check_rows(text: str | None) -> tuple[str, ...]:
    """`--rows A,B`: the rows asked for, in table order (all when None)."""
    if text is None:
        return tuple(ROWS)
    asked = [r.strip() for r in text.split(",") if r.strip()]
    unknown = [r for r in asked if r not in ROWS]
    if unknown or not asked:
        raise StepperError(f"--rows {text!r}: choose among {', '.join(ROWS)}")
    return tuple(r for r in ROWS if r in asked)


def run_trace_bench(calls: int, repeat: int, placement: str = "same",
                    only: tuple[str, ...] = tuple(ROWS),
                    progress: Callable[[str], None] | None = None) -> dict:
    """Measure the rows `only` `repeat` times (in an order rotated per repeat) and build the
    report (rows not measured are null, "not measured")."""
    say = progress or (lambda line: None)
    results = Results()
    with workdir() as tmp, applied(resolve(placement)):
        from pathlib import Path

        groups = [Group(r.key, r.baseline, {r.key: r.probed}) for r in rows(calls, Path(tmp))
                  if r.key in only]
        for turn in range(repeat):
            for group in rotate(groups, turn):
                measure_group(group, SCOPE, calls, results)
                say(f"repeat {turn + 1}/{repeat} {group.name}: "
                    f"{_cell(_median(results, group.name))} µs per call")
    return build(results, calls, repeat, placement)


def _median(results: Results, key: str) -> float | None:
    samples = results.us.get((SCOPE, key))
    if results.failed(SCOPE, key) or not samples:
        return None
    return per_hit_figure(samples)[0]


def build(results: Results, calls: int, repeat: int, placement: str) -> dict:
    per_call = {k: _median(results, k) for k in ROWS}
    report = {
        "schema": SCHEMA,
        "per_call_us": per_call,
        "null_reasons": {k: results.reason(SCOPE, k, "not measured")
                         for k in ROWS if per_call[k] is None},
        "rows": dict(ROWS),
        "calls": calls,
        "repeat": repeat,
        "placement": placement,
        "hit_counts": {k: v for (_, k), v in results.hits.items()},
        "samples_us": {k: [round(x, 2) for x in v] for (_, k), v in results.us.items()},
        "machine": machine(),
    }
    report["targets"] = targets(per_call)
    return report


def targets(per_call: dict) -> list[dict]:
    out = []
    for text, num, den, bound, kind in TARGETS:
        a, b = per_call.get(num), per_call.get(den)
        ratio = None if a is None or b is None or b <= 0 else round(a / b, 2)
        met = None if ratio is None else (ratio <= bound if kind == "max" else ratio >= bound)
        out.append({"target": text, "ratio": ratio, "met": met})
    return out


def table(report: dict) -> str:
    lines = [f"stepper bench --trace: µs per call of work(a, s) ({report['calls']} calls, "
             f"median of {report['repeat']}, placement {report['placement']}; "
             f"{report['machine']['date']}, {report['machine']['cpus']} CPUs)"]
    lines += _grid(["row", "µs/call", "what"],
                   [[k, _cell(report["per_call_us"][k]), report["rows"][k]] for k in ROWS])
    lines += ["", "targets:"]
    for t in report["targets"]:
        verdict = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
        lines.append(f"  {t['target']:<36} ratio {_cell(t['ratio'])}: {verdict}")
    if report["null_reasons"]:
        lines += ["", "null rows:"]
        lines += [f"  {k}: {why}" for k, why in report["null_reasons"].items()]
    return "\n".join(lines)
