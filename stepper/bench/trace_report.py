"""`stepper bench --trace`: the runs in rotated order, the medians, the targets, the table and
the JSON report (docs/schema.md, "bench --trace"). The rows are in stepper.bench.tracing."""

from __future__ import annotations

from typing import Callable

from ..errors import StepperError
from ..output import SCHEMA
from .harness import Group, Results, measure_group, per_hit_figure, rotate
from .placement import applied, resolve
from .runs import Sample
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
    ("stepper_stack_deep <= 2x stepper_fetch_deep", "stepper_stack_deep",
     "stepper_fetch_deep", 2.0, "max"),
)

#: (description, numerator, denominator): ratios to the C floor rows, for information only:
#: what stepper and ltrace pay per call against what a C ptrace tracer pays for the same work.
FLOOR_RATIOS = (
    ("ltrace / c_floor_args (what a C ptrace tracer reaches)", "ltrace", "c_floor_args"),
    ("stepper_args / c_floor_args", "stepper_args", "c_floor_args"),
    ("stepper_count / c_floor_count", "stepper_count", "c_floor_count"),
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

        raw: dict[tuple[str, str], list[int]] = {}
        groups = [Group(r.key, _kept(raw, r.key, "base", r.baseline),
                        {r.key: _kept(raw, r.key, "probed", r.probed)})
                  for r in rows(calls, Path(tmp)) if r.key in only]
        for turn in range(repeat):
            for group in rotate(groups, turn):
                measure_group(group, SCOPE, calls, results)
                say(f"repeat {turn + 1}/{repeat} {group.name}: "
                    f"{_cell(_median(results, group.name))} µs per call")
    return build(results, calls, repeat, placement, _best(results, raw, calls))


def _kept(raw: dict, key: str, kind: str, runner: Callable[[], Sample]) -> Callable[[], Sample]:
    """`runner`, its wall times kept in raw[(key, kind)]."""
    def run() -> Sample:
        sample = runner()
        raw.setdefault((key, kind), []).append(sample.ns)
        return sample
    return run


def _best(results: Results, raw: dict, calls: int) -> dict:
    """Per row, (fastest probed run - fastest baseline run) / calls, in µs: on a busy machine
    the other sessions only ever add time, so the fastest runs are the closest to the tools'
    own cost, and a baseline that a stall made slow cannot drive a figure negative."""
    out = {}
    for key in ROWS:
        base, probed = raw.get((key, "base")), raw.get((key, "probed"))
        if results.failed(SCOPE, key) or not base or not probed:
            out[key] = None
            continue
        value = (min(probed) - min(base)) / calls / 1000
        out[key] = round(value, 2) if value > 0 else None
    return out


def _median(results: Results, key: str) -> float | None:
    samples = results.us.get((SCOPE, key))
    if results.failed(SCOPE, key) or not samples:
        return None
    return per_hit_figure(samples)[0]


def build(results: Results, calls: int, repeat: int, placement: str, best: dict) -> dict:
    per_call = {k: _median(results, k) for k in ROWS}
    report = {
        "schema": SCHEMA,
        "per_call_us": per_call,
        "null_reasons": {k: results.reason(SCOPE, k, "not measured")
                         for k in ROWS if per_call[k] is None},
        "best_us": best,
        "rows": dict(ROWS),
        "calls": calls,
        "repeat": repeat,
        "placement": placement,
        "hit_counts": {k: v for (_, k), v in results.hits.items()},
        "samples_us": {k: [round(x, 2) for x in v] for (_, k), v in results.us.items()},
        "machine": machine(),
    }
    report["targets"] = targets(per_call, best)
    report["floor_ratios"] = floor_ratios(per_call, best)
    return report


def _ratio(fig: dict, num: str, den: str) -> float | None:
    a, b = fig.get(num), fig.get(den)
    return None if a is None or b is None or b <= 0 else round(a / b, 2)


def floor_ratios(per_call: dict, best: dict | None = None) -> list[dict]:
    """FLOOR_RATIOS on the medians (`ratio`) and on the fastest runs (`best_ratio`): figures,
    never pass or fail."""
    return [{"ratio_of": text, "ratio": _ratio(per_call, num, den),
             "best_ratio": _ratio(best or {}, num, den)} for text, num, den in FLOOR_RATIOS]


def targets(per_call: dict, best: dict | None = None) -> list[dict]:
    """Each goal judged on the medians (`ratio`, `met`) and on the fastest runs
    (`best_ratio`, `best_met`)."""
    out = []
    for text, num, den, bound, kind in TARGETS:
        row = {"target": text}
        for prefix, fig in (("", per_call), ("best_", best or {})):
            ratio = _ratio(fig, num, den)
            row[prefix + "ratio"] = ratio
            row[prefix + "met"] = (None if ratio is None else
                                   ratio <= bound if kind == "max" else ratio >= bound)
        out.append(row)
    return out


def table(report: dict) -> str:
    lines = [f"stepper bench --trace: µs per call of work(a, s) ({report['calls']} calls, "
             f"median of {report['repeat']}, placement {report['placement']}; "
             f"{report['machine']['date']}, {report['machine']['cpus']} CPUs)"]
    lines += _grid(["row", "median", "best", "what"],
                   [[k, _cell(report["per_call_us"][k]), _cell(report["best_us"][k]),
                     report["rows"][k]] for k in ROWS])
    lines += ["", "targets (median; best: fastest probed run - fastest baseline run):"]
    for t in report["targets"]:
        verdict = {True: "met", False: "MISSED", None: "n/a"}
        lines.append(f"  {t['target']:<44} ratio {_cell(t['ratio'])}: {verdict[t['met']]}; "
                     f"best {_cell(t['best_ratio'])}: {verdict[t['best_met']]}")
    lines += ["", "against the C floor (information, not goals):"]
    lines += [f"  {r['ratio_of']:<54} median {_cell(r['ratio'])}, best {_cell(r['best_ratio'])}"
              for r in report["floor_ratios"]]
    if report["null_reasons"]:
        lines += ["", "null rows:"]
        lines += [f"  {k}: {why}" for k, why in report["null_reasons"].items()]
    return "\n".join(lines)
