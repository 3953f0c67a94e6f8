"""A debugger's breakpoint: one object for everything a `break_at` names, and when it stops.

`where` is a run-time address or any `stepper probe -p` spec, resolved by the code `stepper
probe` uses (stepper.specs through stepper.probe_set): a spec can name several sites (a glob,
an IFUNC's implementations, a FILE:LINE with several addresses), all of them `locations` of
one UserBreakpoint. A spec naming a library that is not loaded yet is pending: a breakpoint on
the dynamic loader's `_dl_debug_state` (r_debug.r_brk) inserts it when the library is mapped
and the link map is consistent again. At an exec the old image's locations are gone; the spec
is resolved again against the new image (a bare address means the first image only).

Stopping rules, in this order at each hit: `thread` (only that tid), `condition(hit)`,
`ignore` (the first N hits that pass are let go), then the callback (returning api.STOP
stops, anything else goes on); no callback: stop. A `temporary` breakpoint is removed at its
first stop. Every hit counts in the locations' stats, stopped at or not.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from . import ifunc
from .errors import StepperError
from .loaded import RT_CONSISTENT, loaded_objects, r_debug_breakpoint, r_debug_state
from .probe_set import ProbeSet
from .records import Breakpoint, Hit
from .specs import Probe
from .symbols import ElfSymbols


class _Stop:
    """The value a callback returns to make a debugger's cont() stop at its hit."""

    def __repr__(self) -> str:
        return "STOP"


STOP = _Stop()


class UserBreakpoint:
    """What `break_at` returns: every location of one spec, and its stopping rules."""

    def __init__(self, p: Any, where: int | str, callback: Callable | None, mode: str | None,
                 condition: Callable | None, thread: int | None, temporary: bool,
                 ignore: int, on_return: Callable | None = None) -> None:
        if ignore < 0:
            raise StepperError(f"ignore={ignore}: give a count of hits to let go (0 or more)")
        self.process = p
        self.where = where
        self.callback = callback
        self.on_return = on_return  # at each return of a call entered here (stepper.returns)
        self.mode = mode
        self.condition = condition
        self.thread = thread
        self.temporary = temporary
        self.ignore = ignore
        self.ignore_left = ignore
        self.deleted = False
        self.notes: list[str] = []
        self.breakpoints: list[Breakpoint] = []   # current locations' engine breakpoints
        self.retired: list[Breakpoint] = []       # gone with an old image (counts kept)
        self.probe_set: ProbeSet | None = None

    def __repr__(self) -> str:
        where = self.where if isinstance(self.where, str) else f"{self.where:#x}"
        return f"<Breakpoint {where} locations={[hex(a) for a in self.locations]}>"

    @property
    def locations(self) -> list[int]:
        """Every run-time address this breakpoint is inserted at now."""
        return [bp.address for bp in self.breakpoints]

    @property
    def address(self) -> int | None:
        """The first location (None while pending)."""
        return self.breakpoints[0].address if self.breakpoints else None

    @property
    def pending(self) -> bool:
        """Some of the spec waits for a library that is not loaded yet."""
        return bool(self.probe_set is not None and self.probe_set.waiting)

    @property
    def hits(self) -> int:
        """Hits at every location, stopped at or not (old images' included)."""
        return sum(bp.stats.hits for bp in self.breakpoints + self.retired)

    # --- placing --------------------------------------------------------------------------

    def place(self, strict: bool = True) -> None:
        """Resolve the spec against process `self.process` as it is now and insert what
        resolves; the rest waits for its library."""
        p = self.process
        if isinstance(self.where, int):
            self._insert(self.where, strict=True)
            return
        if self.probe_set is None:
            make = ProbeSet.for_process if p.attached else ProbeSet.for_executable
            arg = loaded_objects(p.pid) if p.attached else p.exe
            self.probe_set = make([self.where], arg)
            self.update(strict, self.probe_set.probes)  # resolved already (attach)
            return
        self.update(strict)

    def update(self, strict: bool = False, resolved: list[Probe] = ()) -> None:
        """Insert the sites that became resolvable (a library was mapped)."""
        p = self.process
        objects = loaded_objects(p.pid)
        for probe in list(resolved) + self.probe_set.update(objects):
            obj = next((o for o in objects if o.same_file(probe.path)), None)
            for site in _expand_ifunc(probe, obj.bias if obj is not None else 0):
                self._insert(site.address, strict and not self._glob())
        if self.probe_set.waiting:
            watch_loader(p)

    def _glob(self) -> bool:
        return isinstance(self.where, str) and any(c in self.where for c in "*?[")

    def _insert(self, address: int, strict: bool) -> None:
        p = self.process
        if address in self.locations:
            return
        try:
            bp = p.add_breakpoint(address, self.mode, self._engine_callback(), self.on_return)
        except StepperError as e:
            if strict:
                raise
            self.notes.append(f"{self.where}: {address:#x} not probed: {e}")
            return
        bp.owner = self
        self.breakpoints.append(bp)

    def _engine_callback(self) -> Callable[[Hit], Any] | None:
        """What runs at a hit under run(): the rules, then the callback (none: count)."""
        if self.callback is None:
            return None
        return self._callback_mode_hit

    def _callback_mode_hit(self, hit: Hit) -> Any:
        if self.passes(hit):
            return self.callback(hit)
        return None

    def new_image(self) -> None:
        """The process exec'd: the old image's locations are gone; resolve again."""
        self.retired += self.breakpoints
        self.breakpoints = []
        if isinstance(self.where, int) or self.deleted:
            return
        self.probe_set = ProbeSet.for_new_image([self.where], self.process.exe)
        self.update(strict=False)

    def delete(self) -> None:
        """Remove every location (the counts stay readable); nothing more is inserted."""
        self.deleted = True
        for bp in self.breakpoints:
            self.process.remove_breakpoint(bp)
        self.retired += self.breakpoints
        self.breakpoints = []
        if self.probe_set is not None:
            self.probe_set.waiting = []

    # --- deciding -------------------------------------------------------------------------

    def passes(self, hit: Hit) -> bool:
        """The thread, condition and ignore rules (a hit that passes them is acted on)."""
        if self.thread is not None and hit.tid != self.thread:
            return False
        if self.condition is not None and not self.condition(hit):
            return False
        if self.ignore_left > 0:
            self.ignore_left -= 1
            return False
        return True

    def stops(self, hit: Hit) -> bool:
        """Under cont(): whether this hit stops the program (the callback has run)."""
        if not self.passes(hit):
            return False
        if self.callback is not None and self.callback(hit) is not STOP:
            return False
        return True


def _expand_ifunc(probe: Probe, bias: int) -> list[Probe]:
    """A site at an IFUNC resolver stands for the implementations it can return."""
    try:
        symbols = ElfSymbols.load(probe.path)
    except StepperError:
        return [probe]
    vaddr = probe.address - bias
    if not ifunc.is_ifunc(symbols, vaddr):
        return [probe]
    targets = ifunc.implementations(symbols, vaddr)
    if not targets:
        return [probe]
    return [Probe(probe.spec, probe.object, s.name, bias + s.value, probe.path,
                  group=probe.symbol) for s in targets]


# --- following the loader ---------------------------------------------------------------

def watch_loader(p: Any) -> None:
    """One internal breakpoint per process image on `_dl_debug_state`: at each hit with a
    consistent link map, the pending user breakpoints of `p` are updated."""
    if p.loader_watch is not None and p.loader_watch.inserted:
        return
    objects = loaded_objects(p.pid)
    address = r_debug_breakpoint(objects)
    if address is None:
        return

    def loaded(hit: Hit) -> None:
        if r_debug_state(hit.read, objects) != RT_CONSISTENT:
            return
        for user in list(p.user_breakpoints):
            if user.pending and not user.deleted:
                user.update()

    existing = p.breakpoints.by_address.get(address)
    if existing is not None:  # someone else's breakpoint there: share it
        theirs = existing.callback

        def both(hit: Hit) -> Any:
            loaded(hit)
            return theirs(hit) if theirs is not None else None
        existing.callback = both
        p.loader_watch = existing
        return
    p.loader_watch = p.add_breakpoint(address, "auto", loaded)


def exec_happened(p: Any) -> None:
    """At an exec stop: every user breakpoint of `p` resolved again for the new image."""
    p.loader_watch = None
    for user in list(p.user_breakpoints):
        try:
            user.new_image()
        except StepperError as e:
            user.notes.append(f"after exec of {os.path.basename(p.exe)}: {e}")
