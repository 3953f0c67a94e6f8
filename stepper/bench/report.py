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
from .debugger_rows import IDLE, STEP_KEYS, STOP_KEYS, THREAD_KEYS

#: The figures of `per_hit_us`, in table order.
KEYS = ("auto", "emulate", "xol", "boost", "reinsert", "c_floor", "c_floor_xol", "gdb",
        "gdb_dprintf", "libdebug")
#: stepper's own strategies: the keys the variants and the policy are measured for. `auto`
#: (the default) is measured as a user gets it, next to each strategy it may choose.
STRATEGIES = ("auto", "emulate", "xol", "boost", "reinsert")
#: The bound of `auto` against `boost` on a variant without a memory store. With a store the
#: emulated hit pays one more system call (process_vm_writev), which boost does not: that
#: gap is reported with the breakdown instead (docs/costs.md).
AUTO_VS_BOOST = 1.05

_NOT_STEPPER = "the placement policy only moves stepper; peers are in the free placement"

#: (description, numerator key, denominator key, bound, "max"|"min"): ratio = num / den.
TARGETS = (
    ("emulate <= 1.3x c_floor", "emulate", "c_floor", 1.3, "max"),
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
        "variant_breakdown_us": {
            v: {name: round(statistics.median(p[name] for p in parts), 2) for name in PARTS}
            for v, parts in results.variant_parts.items()},
        "null_reasons": {"per_hit_us": per_hit_reasons, "placements": placement_reasons,
                         "variants": variant_reasons},
        "instructions": {t.variant: t.instruction for t in [head, *others]},
        "stores": sorted(t.variant for t in [head, *others] if t.stores),
        "auto_strategy": _auto_strategy(results, head, others, first),
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
    if getattr(config, "debugger", False):
        rows = {k: results.debugger(k) for k in (*STOP_KEYS, *THREAD_KEYS, *STEP_KEYS)}
        report["debugger_us"] = rows
        report["null_reasons"]["debugger_us"] = {
            k: results.reason("debugger", k, "not measured") for k, v in rows.items() if v is None}
        report["debugger_placement"] = first
        report["steps"] = config.steps
    if ("breakdown", "breakdown") in results.reasons:
        report["null_reasons"]["breakdown_us"] = results.reasons[("breakdown", "breakdown")]
    report["targets"] = targets(report)
    report["store_gaps"] = store_gaps(report)
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


def _auto_strategy(results, head, others, first) -> dict:
    """Per variant: the strategy `auto` stepped its hits with."""
    out = {}
    for variant, scope in [(head.variant, first), *((t.variant, t.variant) for t in others)]:
        chosen = results.strategy.get((scope, "auto"))
        if chosen is not None:
            out[variant] = chosen
    return out


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
    stores = set(report.get("stores", ()))
    for variant, row in report.get("variants", {}).items():
        if variant in stores:
            continue  # the store's system call: reported as a gap (store_gaps), not judged
        auto, boost = row.get("auto"), row.get("boost")
        ratio = None if auto is None or boost is None or boost <= 0 else round(auto / boost, 2)
        out.append({"target": f"auto <= {AUTO_VS_BOOST}x boost ({variant})", "ratio": ratio,
                    "met": None if ratio is None else ratio <= AUTO_VS_BOOST,
                    "variant": variant})
        own = report.get("variant_breakdown_us", {}).get(variant)
        if out[-1]["met"] is False and own:
            rest = {k: v for k, v in own.items() if k != "wait"}
            top = max(rest, key=rest.get)
            out[-1]["dominant"] = (f"{top} ({rest[top]} µs of its emulate hit; boost "
                                   f"{boost:.2f} µs in all)")
    parts = {k: v for k, v in report["breakdown_us"].items() if k in PARTS and k != "wait"}
    if parts:
        # `wait` (the trap and the wake-ups) is paid by every tracer, the C floor included;
        # what stepper can change is the rest, so the note names the largest of the rest.
        dominant = max(parts, key=parts.get)
        wait = report["breakdown_us"].get("wait")
        for t in out:
            if t["met"] is False and "variant" not in t:  # the breakdown is push_rbp's
                t["dominant"] = (f"{dominant} ({parts[dominant]} µs of the emulate hit; "
                                 f"wait, paid by every tracer: {wait} µs)")
    rows = report.get("debugger_us")
    if rows is not None:
        c, step = rows.get("c_singlestep"), rows.get("step")
        ratio = None if c is None or step is None or step <= 0 else round(c / step, 2)
        out.append({"target": "t.step() >= 5x faster than C singlestep", "ratio": ratio,
                    "met": None if ratio is None else ratio >= 5.0})
    return out


def store_gaps(report: dict) -> list[dict]:
    """Per variant with a memory store: what `auto` (emulating it) costs beyond boost, and
    the breakdown's memory_io, the store's own system call, which boost does not make."""
    out = []
    for variant in report.get("stores", ()):
        row = report["variants"].get(variant, {})
        auto, boost = row.get("auto"), row.get("boost")
        if auto is None or boost is None or boost <= 0:
            continue
        out.append({"variant": variant, "auto": auto, "boost": boost,
                    "gap_us": round(auto - boost, 2), "ratio": round(auto / boost, 2),
                    "memory_io_us": report["breakdown_us"].get("memory_io")})
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
        chosen = report.get("auto_strategy", {})
        lines += _grid(["variant", "instruction", *strategies, "auto is", "auto/boost"],
                       [[v, report["instructions"].get(v, "?"),
                         *(_cell(row[s]) for s in strategies), chosen.get(v, "?"),
                         _ratio(row.get("auto"), row.get("boost"))]
                        for v, row in report["variants"].items()])
        for gap in report.get("store_gaps", ()):
            lines.append(f"  {gap['variant']} stores to memory: auto {gap['auto']:.2f} against "
                         f"boost {gap['boost']:.2f} (+{gap['gap_us']:.2f} µs, "
                         f"{gap['ratio']:.2f}x); the store's process_vm_writev is memory_io "
                         f"{gap['memory_io_us']} µs of the breakdown below")
    if report["colocated"]:
        lines += ["", "tracer and tracee on one CPU (share of 20 ms samples, unpinned runs):"]
        lines += [f"  {scope}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items())
                  for scope, row in report["colocated"].items()]
    if report["breakdown_us"]:
        lines += ["", f"emulate hit path, µs per hit ({report['variant_placement']}, "
                      f"instrumented lean loop):"]
        lines += ["  " + ", ".join(f"{k} {v}" for k, v in report["breakdown_us"].items())]
    for variant, parts in report.get("variant_breakdown_us", {}).items():
        lines += [f"  {variant} ({report['instructions'].get(variant, '?')}): "
                  + ", ".join(f"{k} {v}" for k, v in parts.items())]
    if report.get("debugger_us") is not None:
        lines += ["", *_debugger_table(report)]
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


def _debugger_table(report: dict) -> list[str]:
    """µs per stop and per step, each with how many times stepper's figure it is."""
    rows = report["debugger_us"]
    lines = [f"debugger API ({report['debugger_placement']}): µs per stop-and-continue "
             f"round trip ({report['hits']} stops) and per instruction step "
             f"({report['steps']} steps); _threads: {IDLE} idle threads more; "
             f"x: the figure / stepper's"]
    grid = []
    for keys, ours in ((STOP_KEYS, "cont"), (THREAD_KEYS, "cont_threads"), (STEP_KEYS, "step")):
        base = rows.get(ours)
        for k in keys:
            v = rows.get(k)
            x = "" if k == ours or v is None or not base else f"{v / base:.2f}x"
            grid.append([k, _cell(v), x])
    return lines + _grid(["figure", "µs", "x"], grid)


def _null_lines(report: dict) -> list[str]:
    """Each distinct (figure, reason) once, with the places it applies to."""
    where: dict[tuple[str, str], list[str]] = {}
    for group in ("placements", "variants"):
        for scope, reasons in report["null_reasons"][group].items():
            for key, reason in reasons.items():
                if reason != _NOT_STEPPER:
                    where.setdefault((key, reason), []).append(scope)
    for key, reason in report["null_reasons"].get("debugger_us", {}).items():
        where.setdefault((key, reason), []).append("debugger")
    if not where:
        return []
    return ["", "null figures:"] + [f"  {key} ({', '.join(scopes)}): {reason}"
                                    for (key, reason), scopes in where.items()]


def _ratio(a, b) -> str:
    return "null" if a is None or b is None or b <= 0 else f"{a / b:.2f}"


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
