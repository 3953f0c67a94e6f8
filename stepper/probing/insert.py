"""Inserting the probes of a ProbeSet into a process at the exec stop and whenever the dynamic
loader maps objects (a breakpoint on `_dl_debug_state`, r_debug.r_brk), with the rows of the
table they feed: the part of `stepper probe` that writes breakpoints, over stepper.api.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from dataclasses import dataclass

from .. import api
from ..errors import StepperError
from ..loaded import RT_CONSISTENT, LoadedObject, loaded_objects, r_debug_breakpoint, r_debug_state
from ..probe_set import ProbeSet
from ..specs import Probe, parse_spec
from .preflight import Preflight, expand_ifuncs

__all__ = ["Inserter", "Row", "Progress"]

_realpath = functools.lru_cache(maxsize=256)(os.path.realpath)
PROGRESS_MIN = 200      # fewer probes than this insert too fast to need a progress line
PROGRESS_EVERY = 100
BATCH = 1024            # probes prepared and written at once (one read of the maps each)


@dataclass
class Row:
    """One probe of the table: where it came from, and its breakpoint."""

    spec: str
    object: str
    symbol: str | None
    bp: api.Breakpoint
    group: str | None = None   # the IFUNC an implementation was probed for (one table row)
    path: str = ""             # the object's file and load bias: where site-bound fetch
    bias: int = 0              # arguments (USDT $argN, parameter names) are read from


class Inserter:
    """Puts the probes of a ProbeSet into a stopped (or hit-stopped) process as they resolve."""

    def __init__(self, proc: api.Process, probe_set: ProbeSet, preflight: Preflight,
                 quiet: bool) -> None:
        self.proc = proc
        self.probe_set = probe_set
        self.preflight = preflight
        self.quiet = quiet
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.addresses: set[int] = set()
        self.internal: api.Breakpoint | None = None
        self._loader_objects: list[LoadedObject] = []
        #: called with each new Row (its breakpoint just inserted): where a traced probe
        #: gives the breakpoint its callback (stepper.probing.trace)
        self.on_row = None

    # bare addresses: the engine's first form, unchanged
    def add_addresses(self, texts: list[str]) -> None:
        bias = self.proc.load_bias
        for text in texts:
            bp = self.proc.break_at(parse_spec(text).address + bias)
            self.addresses.add(bp.address)
            symbol = bp.symbol   # the containing function, as the first form reported it
            obj = os.path.basename(symbol.object if symbol else self.proc.exe)
            self._added(Row(text, obj, symbol.name if symbol else None, bp))

    def update(self, strict: bool) -> None:
        """Insert every probe that became resolvable. `strict` (before the program runs):
        a refusal is an error; later it is a warning, as stopping the program would not be
        transparent."""
        objects = loaded_objects(self.proc.pid)
        fresh = self.probe_set.update(objects)
        by_path = {_realpath(o.path): o for o in objects}
        sites = []
        for probe in fresh:
            obj = by_path.get(_realpath(probe.path))
            sites += expand_ifuncs([probe], obj) if obj is not None else [probe]
        self._insert(sites, by_path, strict)
        if self.internal is None and self.probe_set.waiting:
            self._watch_loader(objects)

    def _insert(self, sites: list[Probe], by_path: dict, strict: bool) -> None:
        """Insert `sites` in batches (stepper.breakpoints.Breakpoints.add_many: the answers
        one-by-one insertion gives, far faster); a batch is small enough for the progress
        line to move."""
        progress = Progress(len(sites), enabled=not self.quiet)
        wanted = []
        for probe in sites:
            obj = by_path.get(_realpath(probe.path))
            if obj is not None and (_realpath(probe.path),
                                    probe.address - obj.bias) in self.preflight.skip:
                continue
            wanted.append(probe)
        skipped = len(sites) - len(wanted)
        for start in range(0, len(wanted), BATCH):
            batch = wanted[start:start + BATCH]
            firsts = list(dict.fromkeys(p.address for p in batch
                                        if p.address not in self.addresses))
            answers = dict(zip(firsts, self.proc.break_at_many(firsts)))
            for probe in batch:
                progress.step()
                if probe.address in self.addresses:
                    continue
                answer = answers[probe.address]
                if isinstance(answer, StepperError):
                    if strict:
                        raise StepperError(f"probe spec {probe.spec!r}: {answer}") from None
                    self.notes.append(f"probe spec {probe.spec!r}: {probe.symbol} in "
                                      f"{probe.object} not probed: {answer}")
                    continue
                if probe.semaphore is not None:
                    self.proc.hold_semaphore(answer, probe.semaphore)
                self.addresses.add(probe.address)
                obj = by_path.get(_realpath(probe.path)) if probe.path else None
                self._added(Row(probe.spec, probe.object, probe.symbol, answer,
                                probe.group, probe.path, obj.bias if obj is not None else 0))
                progress.inserted += 1
        for _ in range(skipped):
            progress.step()
        progress.end()

    def _added(self, row: Row) -> None:
        self.rows.append(row)
        if self.on_row is not None:
            self.on_row(self.proc, row)

    def _watch_loader(self, objects: list[LoadedObject]) -> None:
        """An internal breakpoint on the loader's `_dl_debug_state` (r_debug.r_brk): at each
        hit with a consistent link map, the newly mapped objects get their probes."""
        address = r_debug_breakpoint(objects)
        if address is None:
            return
        self._loader_objects = objects
        mine = next((row.bp for row in self.rows if row.bp.address == address), None)
        if mine is not None:   # the user probes _dl_debug_state too: share its breakpoint
            mine.callback = self._loader_hit
            self.internal = mine
        else:
            # auto, whatever --mode says: the user's mode is for the user's probes
            self.internal = self.proc.break_at(address, callback=self._loader_hit, mode="auto")

    def _loader_hit(self, hit: api.Hit) -> None:
        if not self.probe_set.waiting:
            return
        if r_debug_state(hit.read, self._loader_objects) == RT_CONSISTENT:
            self.update(strict=False)

    def warnings(self) -> list[str]:
        return self.preflight.notes + self.notes + self.probe_set.warnings()

    def fork(self, child: api.Process) -> "Inserter":
        """The inserter of a forked child: its rows are the child's copies of this image's
        breakpoints (own hit counts), the loader watch calls back into the child's own
        inserter, and what is still waiting for a library is waited for in the child too."""
        copies = {bp.address: bp for bp in child.breakpoints}
        ps = self.probe_set
        new = Inserter(child, dataclasses.replace(ps, waiting=list(ps.waiting),
                                                  probes=list(ps.probes), problems=[],
                                                  _addresses=set(ps._addresses)),
                       self.preflight, quiet=True)
        new.rows = [dataclasses.replace(row, bp=copies[row.bp.address]) for row in self.rows
                    if row.bp.address in copies]
        new.addresses = set(self.addresses)
        new.on_row = self.on_row
        new._loader_objects = list(self._loader_objects)
        if self.internal is not None:
            new.internal = copies.get(self.internal.address)
            if new.internal is not None:
                new.internal.callback = new._loader_hit
        return new


class Progress:
    """`stepper: inserting probes 1200/3567` on a terminal, for batches big enough to take a
    while; nothing when stderr is a file or a pipe, or under --quiet."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.done = 0
        self.inserted = 0
        self.shown = enabled and total >= PROGRESS_MIN and sys.stderr.isatty()

    def step(self) -> None:
        self.done += 1
        if self.shown and self.done % PROGRESS_EVERY == 0:
            print(f"\rstepper: inserting probes {self.done}/{self.total}", end="",
                  file=sys.stderr, flush=True)

    def end(self) -> None:
        if self.shown:
            print(f"\rstepper: inserted {self.inserted} probes" + " " * 16, file=sys.stderr,
                  flush=True)
