"""Static checks of probe sites before the program starts (`Preflight`), and IFUNC symbols
turned into the implementations their resolver can pick (`expand_ifuncs`): the part of
`stepper probe` that reads files only, usable by any caller of stepper.api.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field

import emu

from .. import ifunc, policy
from ..errors import StepperError
from ..loaded import LoadedObject
from ..specs import Pending, Probe
from ..symbols import ElfSymbols

__all__ = ["Preflight", "expand_ifuncs"]

_realpath = functools.lru_cache(maxsize=256)(os.path.realpath)
_symbols = functools.lru_cache(maxsize=64)(ElfSymbols.load)   # one run: files do not change


@dataclass
class Preflight:
    """Static checks of every probe site in the files, before the program starts: refuse
    what cannot be stepped (an exact spec: an error now; a glob: that site is skipped with a
    warning, as one odd function must not make a glob over a library unusable)."""

    mode: str
    skip: set[tuple[str, int]] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    strict: bool = True   # False after an exec: an exact spec's refusal is a note too

    def check(self, waiting: list[Pending], exe: str) -> None:
        for pending in waiting:
            if pending.path is None:
                continue
            obj = LoadedObject(pending.path, 0, main=_realpath(pending.path) == exe)
            for probe in expand_ifuncs(pending.resolve([obj]) or [], obj):
                self._check_site(pending, probe)

    def _check_site(self, pending: Pending, probe: Probe) -> None:
        symbols = _symbols(probe.path)
        try:
            policy.check(self.mode, symbols.read(probe.address, 15), probe.address)
        except (StepperError, emu.EmuError) as e:
            if not pending.spec.is_glob and self.strict:
                raise StepperError(f"probe spec {pending.spec.text!r}: {probe.symbol} in "
                                   f"{probe.object}: {e}") from None
            self.skip.add((_realpath(probe.path), probe.address))
            self.notes.append(f"probe spec {pending.spec.text!r}: skipped {probe.symbol} in "
                              f"{probe.object}: {e}")


def expand_ifuncs(probes: list[Probe], obj: LoadedObject) -> list[Probe]:
    """Each probe at the start of an IFUNC resolver becomes probes at the implementations
    the resolver can return (see stepper.ifunc); other probes pass through."""
    result = []
    for probe in probes:
        symbols = _symbols(probe.path)
        vaddr = probe.address - obj.bias
        targets = ifunc.implementations(symbols, vaddr) if ifunc.is_ifunc(symbols, vaddr) \
            else []
        if not targets:
            result.append(probe)
            continue
        result += [Probe(probe.spec, probe.object, s.name, obj.bias + s.value, probe.path,
                         group=probe.symbol) for s in targets]
    return result
