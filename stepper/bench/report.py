"""The report: the JSON object of `--json` (written by stepper.output), the table on stdout,
and the project's performance targets."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import sys

from ..output import SCHEMA
from .breakdown import PARTS

#: The figures of `per_hit_us`, in table order.
KEYS = ("emulate", "xol", "boost", "reinsert", "c_floor", "c_floor_xol", "gdb", "gdb_dprintf",
        "libdebug")
#: stepper's own strategies: the keys the variants and the policy are measured for.
STRATEGIES = ("emulate", "xol", "boost", "reinsert")

_NOT_STEPPER = "the placement policy only moves stepper; peers are in the free placement"

#: (description, numerator key, denominator key, bound, "max"|"min"): ratio = num / den.
TARGETS = (
    ("emulate <= 1.5x c_floor", "emulate", "c_floor", 1.5, "max"),
    ("xol >= 3x emulate", "xol", "emulate", 3.0, "min"),
    ("boost <= 1.2x emulate", "boost", "emulate", 1.2, "max"),
    ("gdb >= 10x emulate", "gdb", "emulate", 10.0, "min"),
    ("libdebug >= 6x emulate", "libdebug", "emulate", 6.0, "min"),
)


def build(config, results, head, others, placements: list[str], first: str) -> dict:
    """Everything measured, as the JSON-ready report. Null figures have a reason in
    `null_reasons`, at the same path."""
    per_placement, placement_reasons = {}, {}
    for name in placements:
        keys = KEYS if name in ("same", "free", "split") else STRATEGIES  # +policy, +load
        figures = {k: results.median(name, k) for k in KEYS}
        reasons = {k: results.reason(name, k, _NOT_STEPPER if k not in keys else
                                     "not measured") for k in KEYS if figures[k] is None}
        per_placement[name], placement_reasons[name] = figures, reasons
    if "same" in per_placement:
        per_hit, per_hit_reasons = per_placement["same"], placement_reasons["same"]
    else:
        per_hit = dict.fromkeys(KEYS)
        per_hit_reasons = dict.fromkeys(KEYS, "placement same was not measured")
    variants, variant_reasons = _variants(results, head, others, first, per_placement, STRATEGIES)
    report = {
        "schema": SCHEMA,
        "per_hit_us": per_hit,
        "placements": per_placement,
        "variants": variants,
        "hits": config.hits,
        "repeat": config.repeat,
        "load": config.load,
        "breakdown_us": _breakdown(results, per_placement.get(first, {}).get("emulate")),
        "null_reasons": {"per_hit_us": per_hit_reasons, "placements": placement_reasons,
                         "variants": variant_reasons},
        "instructions": {t.variant: t.instruction for t in [head, *others]},
        "variant_placement": first,
        "hit_counts": {scope: {} for scope in placements},
        "colocated": _colocated(results),
        "machine": machine(),
    }
    for (scope, key), counts in results.hits.items():
        report["hit_counts"].setdefault(scope, {})[key] = counts
    report["samples_us"] = {}  # every repeat's figure, a null's included: the raw evidence
    for (scope, key), samples in results.us.items():
        report["samples_us"].setdefault(scope, {})[key] = [round(v, 2) for v in samples]
    if ("breakdown", "breakdown") in results.reasons:
        report["null_reasons"]["breakdown_us"] = results.reasons[("breakdown", "breakdown")]
    report["targets"] = targets(report)
    return report


def _variants(results, head, others, first, per_placement, strategies):
    variants, reasons = {}, {}
    if first in per_placement:
        variants[head.variant] = {k: per_placement[first][k] for k in strategies}
        reasons[head.variant] = {k: results.reason(first, k, "not measured")
                                 for k in strategies if variants[head.variant][k] is None}
    for t in others:
        variants[t.variant] = {k: results.median(t.variant, k) for k in strategies}
        reasons[t.variant] = {k: results.reason(t.variant, k, "not measured")
                              for k in strategies if variants[t.variant][k] is None}
    return variants, reasons


def _colocated(results) -> dict:
    """Per unpinned scope and strategy: median share of the watcher's samples (every 20 ms)
    that found tracer and tracee last on the same CPU."""
    out: dict = {}
    for (scope, key), shares in results.colocated.items():
        out.setdefault(scope, {})[key] = round(statistics.median(shares), 2)
    return out


def _breakdown(results, emulate_us: float | None) -> dict:
    if not results.parts:
        return {}
    out = {name: round(statistics.median(p[name] for p in results.parts), 2) for name in PARTS}
    lean = round(statistics.median(results.lean_us), 2)
    out["lean_total"] = lean
    out["engine_extra"] = None if emulate_us is None else round(emulate_us - lean, 2)
    return out


def targets(report: dict) -> list[dict]:
    """The project's performance targets against this run's figures (None: a figure is missing)."""
    fig = report["per_hit_us"]
    out = []
    for text, num, den, bound, kind in TARGETS:
        a, b = fig.get(num), fig.get(den)
        ratio = None if a is None or b is None or b <= 0 else round(a / b, 2)
        met = None if ratio is None else (ratio <= bound if kind == "max" else ratio >= bound)
        out.append({"target": text, "ratio": ratio, "met": met})
    for load in ("", "+load"):
        if load and "same+load" not in report["placements"]:
            continue
        same = report["placements"].get("same" + load, {}).get("emulate")
        policy = report["placements"].get("free+policy" + load, {}).get("emulate")
        ratio = None if same is None or policy is None or same <= 0 else round(policy / same, 2)
        out.append({"target": f"free+policy{load} emulate <= 1.5x same{load}", "ratio": ratio,
                    "met": None if ratio is None else ratio <= 1.5})
    parts = {k: v for k, v in report["breakdown_us"].items() if k in PARTS and k != "wait"}
    if parts:
        # `wait` (the trap and the wake-ups) is paid by every tracer, the C floor included;
        # what stepper can change is the rest, so the note names the largest of the rest.
        dominant = max(parts, key=parts.get)
        wait = report["breakdown_us"].get("wait")
        for t in out:
            if t["met"] is False:
                t["dominant"] = (f"{dominant} ({parts[dominant]} µs of the emulate hit; "
                                 f"wait, paid by every tracer: {wait} µs)")
    return out


def table(report: dict) -> str:
    """The human summary: per-hit µs by placement, variants, breakdown, targets."""
    n = report.get("load", 0)
    load = f", +load: under {n} busy loop{'s' if n > 1 else ''}" if n else ""
    lines = [f"stepper bench: µs per breakpoint hit ({report['hits']} hits, median of "
             f"{report['repeat']}; {report['machine']['date']}, {report['machine']['cpus']} CPUs"
             f"{load})"]
    places = list(report["placements"])
    lines += _grid(["figure", *places],
                   [[k, *(_cell(report["placements"][p][k]) for p in places)] for k in KEYS])
    if report["variants"]:
        lines += ["", f"variants ({report['variant_placement']}): probed first instruction"]
        strategies = list(next(iter(report["variants"].values())))
        lines += _grid(["variant", "instruction", *strategies],
                       [[v, report["instructions"].get(v, "?"),
                         *(_cell(row[s]) for s in strategies)]
                        for v, row in report["variants"].items()])
    if report["colocated"]:
        lines += ["", "tracer and tracee on one CPU (share of 20 ms samples, unpinned runs):"]
        lines += [f"  {scope}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items())
                  for scope, row in report["colocated"].items()]
    if report["breakdown_us"]:
        lines += ["", f"emulate hit path, µs per hit ({report['variant_placement']}, "
                      f"instrumented lean loop):"]
        lines += ["  " + ", ".join(f"{k} {v}" for k, v in report["breakdown_us"].items())]
    if "same" in report["placements"]:
        lines += ["", "targets (same placement):"]
        for t in report["targets"]:
            verdict = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
            extra = f"; dominated by {t['dominant']}" if "dominant" in t else ""
            lines.append(f"  {t['target']:<44} ratio {_cell(t['ratio'])}: {verdict}{extra}")
    else:
        lines += ["", "targets: judged on the same placement, which was not measured"]
    lines += _null_lines(report)
    return "\n".join(lines)


def _null_lines(report: dict) -> list[str]:
    """Each distinct (figure, reason) once, with the places it applies to."""
    where: dict[tuple[str, str], list[str]] = {}
    for group in ("placements", "variants"):
        for scope, reasons in report["null_reasons"][group].items():
            for key, reason in reasons.items():
                if reason != _NOT_STEPPER:
                    where.setdefault((key, reason), []).append(scope)
    if not where:
        return []
    return ["", "null figures:"] + [f"  {key} ({', '.join(scopes)}): {reason}"
                                    for (key, reason), scopes in where.items()]


def _cell(value) -> str:
    return "null" if value is None else f"{value:.2f}"


def _grid(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return [fmt(header), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)]


def machine() -> dict:
    """What the figures were measured on."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    return {"cpus": len(os.sched_getaffinity(0)), "cpu_model": model,
            "kernel": platform.release(), "python": sys.version.split()[0],
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
