"""Summaries of a traced run, per probe: the count of events (entries, or returns for a return
probe), the latency of return probes (count, mean, p50, p90, p99, max, in ns) and `--hist
NAME` power-of-two histograms of a fetch argument, `retval` or `duration_ns`, drawn as
bpftrace's `hist()` draws them, and with --stack the distinct user stacks by count (also as
Brendan Gregg's folded format, `root;...;leaf count`, for flame graphs). Built from events alone (stepper.probing.events), so
hand-made return events test it as well as the engine's.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from ..stacks import folded_name
from .events import Event

__all__ = ["Aggregate", "bucket", "bucket_range", "percentile", "hist_lines"]

BAR = 52
#: Stacks shown per probe in the text report (the JSON and --folded have them all).
TOP_STACKS = 5


def bucket(value: int) -> int:
    """-1 for negatives, 0 for 0, k for [2**(k-1), 2**k)."""
    return -1 if value < 0 else value.bit_length()


def bucket_range(k: int) -> tuple[int | None, int]:
    """[low, high) of bucket k; low None for the negatives."""
    if k < 0:
        return None, 0
    if k == 0:
        return 0, 1
    return 1 << (k - 1), 1 << k


def percentile(ordered: Sequence[int], p: float) -> int:
    """Nearest-rank percentile of sorted values (p in 0..100)."""
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


class ProbeSummary:
    """What one probe (-p) saw."""

    __slots__ = ("label", "is_return", "count", "durations", "hists", "shown", "stacks")

    def __init__(self, label: str, is_return: bool, hist_names: Iterable[str],
                 stacks: bool = False) -> None:
        self.label = label
        self.is_return = is_return
        self.count = 0
        self.durations: list[int] = []
        self.hists: dict[str, dict[int, int]] = {name: {} for name in hist_names}
        self.shown = True   # False: a counting probe (no per-hit work; the table counts it)
        #: --stack: events by their stack (a tuple of StackFrame, innermost first)
        self.stacks: dict[tuple, int] | None = {} if stacks else None

    def add(self, event: Event) -> None:
        self.count += 1
        if event.duration_ns is not None:
            self.durations.append(event.duration_ns)
        for name, counts in self.hists.items():
            value = event.value_of(name)
            if type(value) is int:
                k = bucket(value)
                counts[k] = counts.get(k, 0) + 1
        stacks, stack = self.stacks, event.stack
        if stacks is not None and stack is not None:
            stacks[stack] = stacks.get(stack, 0) + 1

    def top_stacks(self) -> list[tuple[tuple, int]]:
        """(stack, count), the most frequent first (equal counts in first-seen order)."""
        return sorted((self.stacks or {}).items(), key=lambda item: -item[1])

    def latency(self) -> dict | None:
        if not self.is_return:
            return None
        d = sorted(self.durations)
        if not d:
            return {"count": 0, "mean": None, "p50": None, "p90": None, "p99": None,
                    "max": None}
        return {"count": len(d), "mean": sum(d) // len(d), "p50": percentile(d, 50),
                "p90": percentile(d, 90), "p99": percentile(d, 99), "max": d[-1]}

    def hist_json(self) -> dict:
        """{NAME: [[low, high, count], ...]}: every bucket from the lowest to the highest
        seen (empty ones between included), low inclusive, high exclusive, low null for
        the negatives."""
        out = {}
        for name, counts in self.hists.items():
            rows = []
            if counts:
                for k in range(min(counts), max(counts) + 1):
                    low, high = bucket_range(k)
                    rows.append([low, high, counts.get(k, 0)])
            out[name] = rows
        return out

    def as_dict(self) -> dict:
        data = {"probe": self.label, "event": "return" if self.is_return else "entry",
                "count": self.count}
        latency = self.latency()
        if latency is not None:
            data["latency_ns"] = latency
        if self.hists:
            data["hist"] = self.hist_json()
        if self.stacks is not None:
            data["stacks"] = [{"count": count, "stack": [str(f) for f in stack]}
                              for stack, count in self.top_stacks()]
        return data


class Aggregate:
    """Every probe's summary, in -p order (an event's `probe.index`); `add(event)` for each
    event that passed its filter."""

    def __init__(self, probes: Sequence[tuple[str, bool, Sequence[str]]],
                 hist_names: Sequence[str], stacks: bool = False) -> None:
        """`probes`: (label, is_return, the names its events carry) per probe; a --hist
        NAME is kept for the probes that have NAME; `stacks`: count events by stack."""
        self.summaries: list[ProbeSummary] = []
        for label, is_return, names in probes:
            have = set(names) | ({"retval", "duration_ns"} if is_return else set())
            self.summaries.append(ProbeSummary(
                label, is_return, [n for n in dict.fromkeys(hist_names) if n in have],
                stacks))

    def add(self, event: Event) -> None:
        self.summaries[event.probe.index].add(event)

    def folded(self) -> list[str]:
        """Every probe's stacks in the folded format: `root;...;leaf count`, one line per
        distinct chain of names (stacks that differ only in offsets are one line), so that
        the counts sum to the events that had a stack."""
        counts: dict[str, int] = {}
        for s in self.summaries:
            for stack, count in (s.stacks or {}).items():
                key = ";".join(folded_name(f) for f in reversed(stack))
                counts[key] = counts.get(key, 0) + count
        return [f"{key} {count}" for key, count in sorted(counts.items())]

    def as_json(self) -> list[dict]:
        return [s.as_dict() for s in self.summaries if s.shown]

    def text(self) -> list[str]:
        lines = []
        for s in (s for s in self.summaries if s.shown):
            what = ("return" if s.is_return else "hit") + ("" if s.count == 1 else "s")
            lines.append(f"{s.label}: {s.count:,} {what}")
            latency = s.latency()
            if latency and latency["count"]:
                lines.append("  latency: " + ", ".join(
                    f"{k} {_ns(latency[k])}" for k in ("mean", "p50", "p90", "p99", "max")))
            for name, rows in s.hist_json().items():
                lines.append(f"  @{name}:")
                lines += ["  " + line for line in hist_lines(rows)]
            if s.stacks:
                top = s.top_stacks()
                shown = "" if len(top) <= TOP_STACKS else f", the {TOP_STACKS} most frequent"
                lines.append(f"  stacks ({len(top)} distinct{shown}):")
                for stack, count in top[:TOP_STACKS]:
                    lines.append(f"    {count:,}")
                    lines += [f"      {frame}" for frame in stack]
        return lines


def _ns(value: int) -> str:
    if value >= 1_000_000:
        return f"{value / 1e6:.3f} ms"
    if value >= 1_000:
        return f"{value / 1e3:.3f} us"
    return f"{value} ns"


def _size(v: int) -> str:
    for suffix, shift in (("E", 60), ("P", 50), ("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if v >= 1 << shift and v % (1 << shift) == 0:
            return f"{v >> shift}{suffix}"
    return str(v)


def hist_lines(rows: list[list]) -> list[str]:
    """bpftrace's hist() look: `[4, 8)   12 |@@@@     |`."""
    if not rows:
        return ["(no values)"]
    top = max(r[2] for r in rows) or 1
    out = []
    for low, high, count in rows:
        if low is None:
            label = "(..., 0)"
        elif high - low == 1:
            label = f"[{_size(low)}]"
        else:
            label = f"[{_size(low)}, {_size(high)})"
        bar = "@" * (count * BAR // top)
        out.append(f"{label:<16}{count:>8} |{bar:<{BAR}}|")
    return out
