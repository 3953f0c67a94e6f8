"""The results of `stepper probe`: the JSON report (every detail) and the table (for people).

JSON (`--json`): `probes` has one entry per probe site (spec, object, symbol, address), its
hits summed over every process that had it there (a forked child has its parent's addresses;
an exec'd image has its own; `group` names the table row it is summed into); `steps` and
`threads` add up every process; `processes` has one entry per process of the tree, in the
order they appeared: pid, ppid, argv0 (as of its last exec), exit_code, signal (both None
for a process still running when stepper let it go) and per-spec hits.

The table sums what one question asks about: one row per spec and function (a glob: one row
per function name it matched; the implementations probed for an IFUNC: one row for the
IFUNC; the statement starts of a FILE:LINE in one function: one row; the count of sites
summed is the most one image of one process had), sorted by hits, highest first, with
the rows nobody hit folded into one line. `--verbose` lists every site with the engine's
details instead (address, instruction, strategy, boost); `--per-process` gives each process
its own table. The steps line ends with the wall time the program ran under trace, from its
first instruction to its end (probe insertion at the start not included); strategies that
stepped nothing are left out of it (the JSON has them all).
"""

from __future__ import annotations

import functools
import re
import signal
import sys
from dataclasses import dataclass

from .. import policy
from ..specs import SpecSyntaxError, parse_spec
from .follow import Tracker, Traced

NAMED_WHEN_FEWER = 4   # zero-hit rows folded: named when there are at most this many
_OFFSET = re.compile(r"\+0x[0-9a-f]+$")


@dataclass
class Site:
    """One row of one process: a breakpoint and what the report says about it."""

    pid: int
    image: int   # which image of the process (0, then one more per exec)
    spec: str
    object: str
    symbol: str | None
    group: str | None
    bp: object

    @property
    def hits(self) -> int:
        return self.bp.stats.hits


@dataclass
class Report:
    data: dict          # what --json writes
    sites: list[Site]   # every site of every process, for the tables
    processes: list[Traced]


@functools.lru_cache(maxsize=1024)
def _is_line_spec(text: str) -> bool:
    try:
        return parse_spec(text).kind == "line"
    except SpecSyntaxError:
        return False


@functools.lru_cache(maxsize=1024)
def _is_glob(text: str) -> bool:
    try:
        return parse_spec(text).is_glob
    except SpecSyntaxError:
        return False


def group_of(spec: str, symbol: str | None, ifunc: str | None) -> str | None:
    """The table row a site is summed into, within its spec and object: the IFUNC it was
    probed for, the function of a FILE:LINE site, else its own symbol."""
    if ifunc is not None:
        return ifunc
    if symbol is not None and _is_line_spec(spec):
        return _OFFSET.sub("", symbol)
    return symbol


def build_report(tracker: Tracker, status, detached: bool, warnings: list[str]) -> Report:
    sites = [Site(t.proc.pid, n, row.spec, row.object, row.symbol,
                  group_of(row.spec, row.symbol, row.group), row.bp)
             for t in tracker.processes.values() for n, image in enumerate(t.images)
             for row in image.rows]
    probes: dict[tuple, dict] = {}
    totals = {"emulate": 0, "xol": 0, "reinsert": 0, "fallback": 0}
    for site in sites:
        bp = site.bp
        key = (site.spec, site.object, site.symbol, bp.address)
        entry = probes.get(key)
        if entry is None:
            probes[key] = entry = {
                "spec": site.spec, "object": site.object, "symbol": site.symbol,
                "address": f"{bp.address:#x}", "instruction": policy.text(bp),
                "strategy": bp.strategy, "hits": 0,
                "boost": policy.why(bp),  # why this site did or did not boost
                "group": site.group}
        entry["hits"] += site.hits
        for k, value in bp.stats.steps.items():
            totals[k] = totals.get(k, 0) + value
        totals["fallback"] += sum(bp.stats.fallbacks.values())
    specs = list(dict.fromkeys(tracker.specs + [site.spec for site in sites]))
    processes = list(tracker.processes.values())
    data = {"exit_code": None if detached else status.exit_code,
            "signal": None if detached else status.signal,
            "detached": detached,
            "probes": list(probes.values()), "steps": totals,
            "threads": sum(t.proc.threads_seen for t in processes),
            "wall_s": round(tracker.root.proc.wall_s, 6), "warnings": warnings,
            "processes": [_process_entry(t, specs, sites) for t in processes]}
    return Report(data, sites, processes)


def _process_entry(t: Traced, specs: list[str], sites: list[Site]) -> dict:
    hits = dict.fromkeys(specs, 0)
    for site in sites:
        if site.pid == t.proc.pid:
            hits[site.spec] += site.hits
    end = t.proc.exit
    return {"pid": t.proc.pid, "ppid": t.ppid, "argv0": t.argv0,
            "exit_code": end.exit_code if end is not None else None,
            "signal": end.signal if end is not None else None,
            "probes": [{"spec": spec, "hits": n} for spec, n in hits.items()]}


# -- the table --------------------------------------------------------------------------------

def print_table(report: Report, verbose: bool = False, per_process: bool = False,
                out=None) -> None:
    out = out or sys.stderr
    if per_process:
        for t in report.processes:
            end = t.proc.exit
            how = ("still running, let go" if end is None else
                   f"killed by {signal.Signals(end.signal).name}" if end.signal is not None
                   else f"exited with {end.exit_code}")
            print(f"process {t.proc.pid} ({t.argv0}), parent {t.ppid}: {how}", file=out)
            mine = [s for s in report.sites if s.pid == t.proc.pid]
            _rows(mine, verbose, out, indent="  ")
    else:
        _rows(report.sites, verbose, out)
    data = report.data
    count, threads = len(data["processes"]), data["threads"]
    steps = ", ".join(f"{k} {v:,}" for k, v in data["steps"].items() if v) or "none"
    print(f"steps: {steps}; {count} process{'es' if count != 1 else ''}, {threads} "
          f"thread{'s' if threads != 1 else ''}; {data['wall_s']:.3f} s traced wall time",
          file=out)
    if data["detached"]:
        print("detached: the program runs on untraced", file=out)
    elif data["signal"] is not None:
        print(f"program killed by {signal.Signals(data['signal']).name}", file=out)
    else:
        print(f"program exited with {data['exit_code']}", file=out)


def table_rows(sites: list[Site], verbose: bool = False) -> tuple[list[tuple], list[str]]:
    """(rows with hits, labels of the rows without), rows sorted by hits, highest first
    (first seen first among equals). Default: one row per (spec, object, group) with its
    sites counted; verbose: one row per site (spec, object, symbol) with engine details."""
    groups: dict[tuple, list[Site]] = {}
    for site in sites:
        key = ((site.spec, site.object, site.symbol, site.bp.address) if verbose else
               (site.spec, site.object, site.group))
        groups.setdefault(key, []).append(site)
    rows, idle = [], []
    for (spec, obj, name, *_), members in groups.items():
        hits = sum(s.hits for s in members)
        if verbose:
            bp = members[0].bp
            rows.append((hits, spec, obj, name or "-", f"{bp.address:#x}", policy.text(bp),
                         bp.strategy, policy.why(bp)))
            continue
        per_image: dict[tuple, set] = {}
        for s in members:   # the same site in another process or image is not another site
            per_image.setdefault((s.pid, s.image), set()).add(s.bp.address)
        count = max(len(addresses) for addresses in per_image.values())
        label = (name or "-") + (f" ({count} sites)" if count > 1 else "")
        if hits:
            rows.append((hits, spec, obj, label))
        else:
            idle.append((name if name and _is_glob(spec) else spec, obj))
    rows.sort(key=lambda r: -r[0])
    names = [label for label, _ in idle]
    return rows, [f"{label} in {obj}" if names.count(label) > 1 else label
                  for label, obj in idle]


def _rows(sites: list[Site], verbose: bool, out, indent: str = "") -> None:
    rows, idle = table_rows(sites, verbose)
    header = (("hits", "spec", "object", "symbol", "address", "instruction", "strategy",
               "boost") if verbose else ("hits", "spec", "object", "symbol"))
    cells = [header] + [(f"{r[0]:,}",) + tuple(r[1:]) for r in rows]
    if rows:
        widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
        for c in cells:
            line = c[0].rjust(widths[0]) + "  " + "  ".join(
                x.ljust(w) for x, w in zip(c[1:], widths[1:]))
            print(indent + line.rstrip(), file=out)
    if idle:
        names = f": {', '.join(idle)}" if len(idle) <= NAMED_WHEN_FEWER else ""
        print(f"{indent}{len(idle):,} probe{'s' if len(idle) != 1 else ''} not hit{names}",
              file=out)
    elif not rows:
        print(f"{indent}no probes", file=out)
