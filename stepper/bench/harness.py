"""Orchestration: which runs, in which order, under which placement; medians; the report.

Per-hit overhead of a figure = (probed run - the same tool's unprobed run) / hits, where both
runs use the same tracer, tracee and placement, within the same repeat. All figures of a
placement are measured in one pass, in an order rotated every repeat, and each figure is the
median over the repeats, so a noisy moment of the machine moves one sample of every figure
rather than every sample of one figure, and the ratios hold.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Callable

from . import breakdown, debugger_rows, peers, report
from .errors import Unmeasurable
from .load import busy
from .placement import LOADED, PLACEMENTS, POLICY, Placement, applied, resolve
from .report import KEYS, STRATEGIES
from .runs import Sample, stepper_run
from .tracee import HEADLINE, LOADS, VARIANTS, Tracee, tracee

Runner = Callable[[], Sample]
#: The scope of the debugger rows in Results.
DEBUGGER = "debugger"


@dataclass
class Config:
    """What to measure. `placements` are run in order; variants and the breakdown use the
    first one (same, when it is in the list)."""

    hits: int = 5000
    repeat: int = 3
    placements: tuple[str, ...] = ("same", "free")
    variants: bool = True
    breakdown: bool = True
    policy: bool = True
    load: int = 0  # busy-looping processes: each placement is measured again under them
    debugger: bool = True  # the debugger rows (stepper.bench.debugger_rows)
    steps: int = 20000  # timed instruction steps per figure of the debugger rows
    progress: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        from ..errors import StepperError

        if self.hits < 1:
            raise StepperError(f"--hits must be at least 1, not {self.hits}")
        if self.repeat < 1:
            raise StepperError(f"--repeat must be at least 1, not {self.repeat}")
        if self.steps < 1:
            raise StepperError(f"--steps must be at least 1, not {self.steps}")
        if self.load < 0:
            raise StepperError(f"--load must be 0 or more, not {self.load}")
        for name in self.placements:
            resolve(name)  # raises on an unknown name or a missing second CPU


@dataclass
class Group:
    """One tool's runs: its unprobed baseline and its probed figures, by key."""

    name: str
    baseline: Runner
    figures: dict[str, Runner]


@dataclass
class Results:
    """Samples and reasons, keyed by (scope, key); scope is a placement or a variant."""

    us: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    reasons: dict[tuple[str, str], str] = field(default_factory=dict)
    hits: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    parts: list[dict] = field(default_factory=list)
    lean_us: list[float] = field(default_factory=list)
    variant_parts: dict[str, list[dict]] = field(default_factory=dict)  # breakdowns of LOADS
    colocated: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    strategy: dict[tuple[str, str], str] = field(default_factory=dict)  # what stepped `auto`

    def debugger(self, key: str) -> float | None:
        """Median µs of a debugger row (a time per stop or step, not a difference of runs:
        no noise rule applies)."""
        samples = self.us.get((DEBUGGER, key))
        if self.failed(DEBUGGER, key) or not samples:
            return None
        return round(statistics.median(samples), 2)

    def failed(self, scope: str, key: str) -> bool:
        return (scope, key) in self.reasons

    def median(self, scope: str, key: str) -> float | None:
        if self.failed(scope, key) or not self.us.get((scope, key)):
            return None
        return per_hit_figure(self.us[(scope, key)])[0]

    def reason(self, scope: str, key: str, default: str) -> str:
        """Why the figure of (scope, key) is null: its failure, its noise, or `default`."""
        if (scope, key) in self.reasons:
            return self.reasons[(scope, key)]
        samples = self.us.get((scope, key))
        return (per_hit_figure(samples)[1] if samples else None) or default


def per_hit_figure(samples: list[float]) -> tuple[float | None, str | None]:
    """(median µs per hit of the repeats' `samples`, None), or (None, why) when the noise is
    larger than the figure. A figure is the difference of two whole runs divided by the hits:
    when the probed cost is small against the runs' own variation (few --hits), it comes out
    near zero or below, which is no measurement. The noise is the spread of the repeats
    (largest - smallest); with one repeat there is no spread, and only a figure at or below
    zero is known to be noise. A null is never negative, and a figure is never made up."""
    value = statistics.median(samples)
    spread = max(samples) - min(samples)
    if round(value, 2) <= 0 or spread > value:
        return None, (f"noise: median {value:.1f} µs per hit, spread of the {len(samples)} "
                      f"repeats {spread:.1f} µs; measure with more --hits or --repeat")
    return round(value, 2), None


def stepper_group(t: Tracee, n: int, placement: Placement, policy: bool = False) -> Group:
    figures = {mode: (lambda mode=mode: stepper_run(t, n, mode, placement, policy))
               for mode in STRATEGIES}
    return Group("stepper+policy" if policy else "stepper",
                 lambda: stepper_run(t, n, None, placement, policy), figures)


def headline_groups(t: Tracee, n: int, placement: Placement) -> list[Group]:
    return [
        stepper_group(t, n, placement),
        Group("c_floor", lambda: peers.c_floor(t, n, None, placement), {
            "c_floor": lambda: peers.c_floor(t, n, "emulate", placement),
            "c_floor_xol": lambda: peers.c_floor(t, n, "xol", placement)}),
        Group("gdb", lambda: peers.gdb(t, n, None, placement), {
            "gdb": lambda: peers.gdb(t, n, "break", placement),
            "gdb_dprintf": lambda: peers.gdb(t, n, "dprintf", placement)}),
        Group("libdebug", lambda: peers.libdebug(t, n, False, placement), {
            "libdebug": lambda: peers.libdebug(t, n, True, placement)}),
    ]


def measure_group(group: Group, scope: str, n: int, results: Results,
                  turn: int = 0) -> Sample | None:
    """One baseline and each still-measurable figure once (their order rotated by `turn`);
    per-hit µs into `results`."""
    pending = [k for k in group.figures if not results.failed(scope, k)]
    if not pending:
        return None
    try:
        base = group.baseline()
    except Exception as e:  # noqa: BLE001 - one tool's failure must not lose the others
        for key in pending:
            results.reasons[(scope, key)] = f"baseline failed: {_why(e)}"
        return None
    for key in rotate(pending, turn):
        try:
            sample = group.figures[key]()
        except Exception as e:  # noqa: BLE001 - recorded as this figure's reason
            results.reasons[(scope, key)] = _why(e)
            continue
        results.hits.setdefault((scope, key), []).append(sample.hits)
        if sample.strategy is not None:
            results.strategy[(scope, key)] = sample.strategy
        if sample.hits != n:
            results.reasons[(scope, key)] = f"expected {n} hits, saw {sample.hits}"
            continue
        results.us.setdefault((scope, key), []).append((sample.ns - base.ns) / n / 1000)
        if sample.colocated is not None:
            results.colocated.setdefault((scope, key), []).append(sample.colocated)
    return base


def _why(e: Exception) -> str:
    """The reason shown beside a null: an Unmeasurable's message as is; anything else (a bug
    in the engine or a peer) with its type, so it is not mistaken for a known limitation."""
    if isinstance(e, Unmeasurable):
        return str(e)
    return f"{type(e).__name__}: {e}".splitlines()[0]


def rotate(items: list, by: int) -> list:
    by %= max(len(items), 1)
    return items[by:] + items[:by]


def run_bench(config: Config) -> dict:
    """Measure everything `config` asks for and return the report (see report.build)."""
    say = config.progress or (lambda line: None)
    n = config.hits
    head = tracee(HEADLINE)
    others = [tracee(v) for v in VARIANTS if v != HEADLINE] if config.variants else []
    by_variant = {t.variant: t for t in others}
    results = Results()
    timer_ns = breakdown.timer_cost_ns()
    first = config.placements[0] if "same" not in config.placements else "same"
    policies = [POLICY] if config.policy and "free" in config.placements else []
    for r in range(config.repeat):
        for name in config.placements:
            placement = resolve(name)
            with applied(placement):
                groups = [(name, g) for g in headline_groups(head, n, placement)]
                if name == "free" and policies:
                    groups.append((POLICY, stepper_group(head, n, placement, policy=True)))
                if name == first:
                    groups += [(t.variant, stepper_group(t, n, placement)) for t in others]
                for scope, group in rotate(groups, r):
                    base = measure_group(group, scope, n, results, r)
                    if scope == name and group.name == "stepper" and base is not None \
                            and name == first and config.breakdown:
                        _breakdown_once(head, n, placement, base, timer_ns, results)
                    elif scope in LOADS and base is not None and config.breakdown:
                        _breakdown_once(by_variant[scope], n, placement, base, timer_ns,
                                        results, scope)
            say(f"repeat {r + 1}/{config.repeat} {name}: " + ", ".join(
                f"{k} {_fmt(results.median(name, k))}" for k in KEYS))
            if config.load:
                _measure_loaded(config, head, name, bool(policies), results, r)
        if config.debugger:
            _measure_debugger(config, first, results, r)
    scopes = [*config.placements, *policies]
    if config.load:
        scopes += [s + LOADED for s in scopes]
    return report.build(config, results, head, others, scopes, first)


def _measure_debugger(config: Config, name: str, results: Results, turn: int) -> None:
    """The debugger rows once each (order rotated by `turn`), in placement `name`: µs per
    stop (`config.hits` stops) and per instruction step (`config.steps` steps)."""
    placement = resolve(name)
    with applied(placement):
        for key in rotate(list(debugger_rows.FIGURES), turn):
            if results.failed(DEBUGGER, key):
                continue
            n = config.steps if key in debugger_rows.STEP_KEYS else config.hits
            try:
                count, us = debugger_rows.FIGURES[key](n, placement)
            except Exception as e:  # noqa: BLE001 - recorded as this figure's reason
                results.reasons[(DEBUGGER, key)] = _why(e)
                continue
            results.hits.setdefault((DEBUGGER, key), []).append(count)
            if count != n:
                results.reasons[(DEBUGGER, key)] = f"expected {n}, saw {count}"
                continue
            results.us.setdefault((DEBUGGER, key), []).append(us)
    (config.progress or (lambda line: None))(
        f"repeat {turn + 1}/{config.repeat} debugger ({name}): " + ", ".join(
            f"{k} {_fmt(results.debugger(k))}" for k in debugger_rows.FIGURES))


def _measure_loaded(config: Config, head: Tracee, name: str, policy: bool, results: Results,
                    turn: int) -> None:
    """stepper's figures of placement `name` again, under `config.load` busy loops (started
    unpinned, before the placement pins this process)."""
    n = config.hits
    with busy(config.load):
        placement = resolve(name)
        with applied(placement):
            groups = [(name + LOADED, stepper_group(head, n, placement))]
            if name == "free" and policy:
                groups.append((POLICY + LOADED, stepper_group(head, n, placement, policy=True)))
            for scope, group in rotate(groups, turn):
                measure_group(group, scope, n, results, turn)
    (config.progress or (lambda line: None))(
        f"repeat {turn + 1}/{config.repeat} {name}{LOADED}: " + ", ".join(
            f"{k} {_fmt(results.median(name + LOADED, k))}" for k in STRATEGIES))


def _breakdown_once(t: Tracee, n: int, placement: Placement, base: Sample, timer_ns: float,
                    results: Results, variant: str | None = None) -> None:
    """The lean loop's parts of the headline (`variant` None), or of another variant's hit
    (kept apart, in `results.variant_parts`)."""
    if variant is not None:
        try:
            sample, parts = breakdown.lean_run(t, n, placement)
        except Exception:  # noqa: BLE001 - diagnostic only
            return
        if sample.hits == n:
            results.variant_parts.setdefault(variant, []).append(
                breakdown.per_hit_parts(parts, n, timer_ns))
        return
    try:
        sample, parts = breakdown.lean_run(t, n, placement)
    except Exception as e:  # the breakdown is diagnostic: never lose the other figures
        results.reasons[("breakdown", "breakdown")] = f"{type(e).__name__}: {e}"
        return
    if sample.hits != n:
        results.reasons[("breakdown", "breakdown")] = f"expected {n} hits, saw {sample.hits}"
        return
    results.parts.append(breakdown.per_hit_parts(parts, n, timer_ns))
    results.lean_us.append((sample.ns - base.ns) / n / 1000)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


__all__ = ["Config", "run_bench", "KEYS", "STRATEGIES", "PLACEMENTS"]
