"""The probes of one run (`-p` specs), checked before the program starts and inserted as the
objects they name appear: the bookkeeping between stepper.specs (what a spec means) and
whoever inserts breakpoints (stepper.probing).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Sequence

from .errors import StepperError
from .loaded import LoadedObject
from .specs import (NoMatchError, ObjectNotFoundError, OffsetError, Pending, Probe, SpecError,
                    parse_spec, resolve, resolve_static)

__all__ = ["ProbeSet"]


@dataclass
class ProbeSet:
    """Every `-p` of one run: checked before the program starts, inserted as objects appear.

    Spawn:  ps = ProbeSet.for_executable(specs, path)   # all errors raised here
            at the exec stop and after every r_brk hit with r_state == RT_CONSISTENT:
                for probe in ps.update(loaded_objects(pid)): insert it
            at exit: for line in ps.warnings(): print it
    Attach: ps = ProbeSet.for_process(specs, loaded_objects(pid)); same update/warnings.
    Each address is probed once, by the first spec that names it. `update` never raises for
    a dlopen'ed library that turns out not to match: that becomes a line of `warnings()`.
    """

    waiting: list[Pending] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    _addresses: set[int] = field(default_factory=set, repr=False)

    @classmethod
    def for_executable(cls, specs: Sequence[str], executable_path: str) -> "ProbeSet":
        waiting: list[Pending] = []
        for text in specs:
            spec = parse_spec(text)
            main_only = False
            for item in resolve_static(spec, executable_path):
                if isinstance(item, Pending):
                    waiting.append(item)
                else:
                    main_only = True
            if main_only:
                # Re-resolve with the runtime bias once the executable is mapped.
                qualified = replace(spec, object=os.path.realpath(executable_path))
                waiting.append(Pending(qualified, os.path.basename(executable_path),
                                       path=qualified.object))
        return cls(waiting=waiting)

    @classmethod
    def for_new_image(cls, specs: Sequence[str], executable_path: str) -> "ProbeSet":
        """After an exec: `for_executable` for the new image, where a spec that matches
        nothing (no such symbol, an object it never loads) is left out, not an error (the
        program was not this one when the user wrote it); other refusals (ambiguous) become
        `problems`. Only the objects the image may load are waited for, quietly: a library
        it never loads is no news in an image the user did not name."""
        probe_set = cls()
        for text in specs:
            try:
                one = cls.for_executable([text], executable_path)
            except (NoMatchError, ObjectNotFoundError, OffsetError):
                continue
            except StepperError as e:
                probe_set.problems.append(f"after exec of {executable_path}: {e}")
                continue
            probe_set.waiting += [replace(p, quiet=True)
                                  for p in one.waiting]
        return probe_set

    @classmethod
    def for_process(cls, specs: Sequence[str], objects: Sequence[LoadedObject]) -> "ProbeSet":
        probe_set = cls()
        for text in specs:
            for item in resolve(parse_spec(text), objects):
                if isinstance(item, Pending):
                    probe_set.waiting.append(item)
                else:
                    probe_set._add(item)
        return probe_set

    def update(self, objects: Sequence[LoadedObject]) -> list[Probe]:
        """The probes that became resolvable since the last call (insert these now)."""
        fresh: list[Probe] = []
        still: list[Pending] = []
        for pending in self.waiting:
            try:
                resolved = pending.resolve(objects)
            except SpecError as e:
                # Only a library nobody could check before the run (dlopen'ed, not found on
                # disk) gets here; stopping the traced program now would not be transparent.
                self.problems.append(str(e))
                continue
            if resolved is None:
                still.append(pending)
            else:
                fresh += [p for p in resolved if self._add(p)]
        self.waiting = still
        return fresh

    def _add(self, probe: Probe) -> bool:
        if probe.address in self._addresses:
            return False
        self._addresses.add(probe.address)
        self.probes.append(probe)
        return True

    def warnings(self) -> list[str]:
        """One line per spec whose object never appeared, or appeared without a match for the
        spec (print these at exit)."""
        return self.problems + [p.warning() for p in self.waiting if not p.quiet]
