"""One run of the tracee under stepper (through the public API), timed.

A run is timed from the first resume to the program's exit (the session's own `wall_s`),
so process creation and breakpoint insertion are not in the figure; the unprobed run under
the same tracer is subtracted by the harness.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

from .. import api
from ..errors import StepperError
from .errors import Unmeasurable
from .placement import Colocation, Placement, place_tracee
from .tracee import Tracee


@dataclass(frozen=True)
class Sample:
    """One timed run: how many breakpoint hits it saw and how long it took."""

    hits: int
    ns: int
    colocated: float | None = None  # share of samples with tracer and tracee on one CPU
    strategy: str | None = None  # the strategy that stepped the hits (what `auto` chose)


def stepper_run(tracee: Tracee, iterations: int, mode: str | None, placement: Placement,
                policy: bool = False) -> Sample:
    """Run `tracee` under stepper with one breakpoint on `probed` forced to `mode` (None: no
    breakpoint, the baseline). Every hit must have been stepped by `mode` itself (`auto`: by
    the one strategy it chose): a fall-back would measure another strategy, so it makes the
    figure unmeasurable instead.

    `policy`: the engine's placement policy `follow` (stepper.placement), else `none`.
    Unpinned runs are watched either way, to report how often tracer and tracee shared a
    CPU."""
    if mode is not None and mode not in api.MODES:
        reason = ("boost strategy not implemented" if mode == "boost"
                  else f"stepper has no {mode} strategy")
        raise Unmeasurable(reason)
    proc = api.spawn(tracee.argv(iterations), mode or "auto")
    proc.placement = "follow" if policy else "none"
    bp = None
    try:
        place_tracee(placement, proc.pid)
        if mode is not None:
            bp = proc.break_at(tracee.probe, mode=mode)
    except StepperError as e:
        proc.kill()
        raise Unmeasurable(str(e)) from None
    follow = Colocation(proc.pid) if placement.name == "free" else None
    try:
        with follow or nullcontext():
            status = proc.run()
    except StepperError as e:  # the engine failed mid-run: this figure only is lost
        raise Unmeasurable(f"mode {mode}: {e}") from None
    if status.exit_code != 0:
        raise Unmeasurable(f"the tracee ended with {status} under mode {mode}")
    colocated = follow.colocated if follow is not None else None
    if bp is None:
        return Sample(0, int(proc.wall_s * 1e9), colocated)
    _check_steps(bp, mode)
    return Sample(bp.stats.hits, int(proc.wall_s * 1e9), colocated, bp.strategy)


def _check_steps(bp: api.Breakpoint, mode: str) -> None:
    stats = bp.stats
    chosen = bp.strategy if mode == "auto" else mode
    stepped = getattr(stats, chosen, None)
    if stats.fallbacks or bp.strategy != chosen or (stepped is not None and stepped != stats.hits):
        raise Unmeasurable(f"mode {mode} stepped {bp.insn.text} as {bp.strategy} "
                           f"with fall-backs {stats.fallbacks}")
