"""The fetch arguments of traced probes bound to the breakpoint they are put on (USDT
`$argN`, parameter names: stepper.fetch_sites), and their check before the program starts."""

from __future__ import annotations

import functools
import os
import sys

from ..fetchargs import ProbeLine
from ..loaded import LoadedObject
from ..specs import Pending, Probe

__all__ = ["bound_args", "settle_lines", "settle_resolved"]

_realpath = functools.lru_cache(maxsize=256)(os.path.realpath)


def bound_args(probes: list, row) -> list | None:
    """Per probe (stepper.probing.events.TraceProbe) of a new breakpoint `row`, its fetch
    arguments bound to the site; None when none needs binding. A site that cannot give an
    argument (a library loaded after the start, unchecked) fetches a fault there, with a
    warning on stderr."""
    if not row.path or not any(tp.line.needs_site for tp in probes):
        return None   # nothing to bind, and the DWARF readers stay unloaded
    from ..fetch_sites import bind_or_unbound

    vaddr = row.bp.address - row.bias
    result = []
    for tp in probes:
        args = []
        for arg in tp.args:
            bound, why = bind_or_unbound(arg, tp.line, row.path, vaddr, row.bias)
            if why is not None:
                print(f"stepper: warning: {why}: fetched as a fault there", file=sys.stderr)
            args.append(bound)
        result.append(args)
    return result


def settle_lines(lines: list[ProbeLine], waiting: list[Pending], exe: str) -> list[ProbeLine]:
    """Before a spawned program starts: each line checked against its sites in the files
    (stepper.fetch_sites.settle); a line whose object is not known yet stays as it is.
    Without arguments that need a site nothing is resolved nor imported (reading DWARF is a
    heavy import)."""
    if not any(line.needs_site for line in lines):
        return lines
    from ..fetch_sites import settle

    sites: dict[str, list[tuple[str, int]]] = {}
    for pending in waiting:
        if pending.path is None:
            continue
        obj = LoadedObject(pending.path, 0, main=_realpath(pending.path) == exe)
        for probe in pending.resolve([obj]) or []:
            sites.setdefault(probe.spec, []).append((probe.path, probe.address))
    return [settle(line, sites.get(line.spec, [])) for line in lines]


def settle_resolved(lines: list[ProbeLine], probes: list[Probe], by_path: dict) -> list:
    """The same for --pid: the probes resolved against the running process."""
    if not any(line.needs_site for line in lines):
        return lines
    from ..fetch_sites import settle

    sites: dict[str, list[tuple[str, int]]] = {}
    for probe in probes:
        obj = by_path.get(_realpath(probe.path))
        if obj is not None:
            sites.setdefault(probe.spec, []).append((probe.path, probe.address - obj.bias))
    return [settle(line, sites.get(line.spec, [])) for line in lines]
