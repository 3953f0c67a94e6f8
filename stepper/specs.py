"""Probe specs (`-p`): parse them, and resolve them to runtime addresses in loaded objects.

Forms (docs/probes.md has the user's version):
    SYMBOL  SYMBOL+OFFSET  OBJECT:SYMBOL[+OFFSET]  GLOB  OBJECT:GLOB
    0xADDRESS  OBJECT:0xADDRESS  FILE:LINE  OBJECT:FILE:LINE
    usdt:[OBJECT:]PROVIDER:NAME (stepper.usdt)
A SYMBOL may be a demangled C++ name (`ns::Acc::add`, `ns::Acc::add(int)`: stepper.demangle).

Where an unqualified spec looks (the ambiguity rule): the main executable first; if it has no
match, the shared libraries, preferring those that export a match (a plain name then means
what a call by that name from the program reaches, so `getpid` is libc's, not the loader's
private copy); two or more libraries left is an AmbiguousSpecError naming them.

Two moments resolve specs. Before the program starts, `resolve_static` checks every spec
against the executable and the libraries it will load (found like the dynamic loader finds
them, stepper.loader), so every error comes out before anything runs; its `Pending` results
name the library each spec settled on. Once the process exists, `resolve` turns specs into
runtime addresses for whatever `loaded_objects(pid)` reports, and `Pending.resolve` retries
when libraries appear. `stepper.probe_set.ProbeSet` does that bookkeeping for the engine.
"""

from __future__ import annotations

import fnmatch
import os
import re
import weakref
from dataclasses import dataclass, replace
from typing import Iterable, Sequence

import emu

from . import demangle, usdt
from .boundary import Boundaries
from .datasyms import variable_error
from .loaded import LoadedObject
from .loader import LoaderError, file_matches, find_on_disk, library_closure
from .spec_syntax import (GLOB_CHARS, AmbiguousSpecError, NoMatchError, ObjectNotFoundError,
                          OffsetError, Spec, SpecError, SpecSyntaxError, parse_spec)
from .symbols import ElfSymbols, Symbol, preference

__all__ = [
    "Spec", "Probe", "Pending", "parse_spec", "resolve", "resolve_static", "resolve_all",
    "SpecError", "SpecSyntaxError", "NoMatchError", "AmbiguousSpecError", "OffsetError",
    "ObjectNotFoundError",
]

# gcc's `f.cold` symbols label the rarely-run tail of f, jumped to from f, never called: a glob
# over "functions" leaves them out (an exact name, or a glob that says .cold, still reaches them).
_COLD = re.compile(r"\.cold(\.\d+)?$")


# -- results ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Probe:
    """One probe site: where to put the breakpoint and how to report it.

    `spec` is the text that produced it (a glob's probes all carry the glob), `object` the
    file name of the object, `symbol` `name` or `name+0xOFF`, `address` the absolute runtime
    address, `path` the object's full path.
    """

    spec: str
    object: str
    symbol: str
    address: int
    path: str = ""
    group: str | None = None   # for an IFUNC implementation: the IFUNC symbol it stands for
    semaphore: int | None = None   # a USDT site's semaphore (runtime address), if it has one


@dataclass(frozen=True)
class Pending:
    """A spec whose object is not mapped yet: retry `resolve(objects)` when libraries appear.

    `spec` is qualified with the object the static resolution chose, so a later retry cannot
    land somewhere else. A spec still pending when the program exits is a warning, not an
    error (`ProbeSet.warnings`): only dlopen could have loaded its object.
    """

    spec: Spec
    object: str
    path: str | None = None
    quiet: bool = False   # no warning at exit if it never loaded (an image after an exec)

    def matches(self, obj: LoadedObject) -> bool:
        """Whether mapped object `obj` is the one this spec waits for."""
        return _object_matches(self.spec.object or self.object, obj)

    def resolve(self, objects: Sequence[LoadedObject]) -> list[Probe] | None:
        """Probes once the object is mapped; None while it is not."""
        if not any(self.matches(o) for o in objects):
            return None
        return [p for p in resolve(self.spec, objects) if isinstance(p, Probe)]

    def warning(self) -> str:
        """The line to print at exit if the object never appeared."""
        return f"probe spec {self.spec.text!r}: {self.object} was never loaded"


# -- resolving against a process --------------------------------------------------------------

@dataclass(frozen=True)
class _Candidate:
    """An object a spec may resolve in: its symbols, runtime bias, and how to report it."""

    path: str
    bias: int
    main: bool
    loaded: LoadedObject | None = None

    @property
    def symbols(self) -> ElfSymbols:
        return ElfSymbols.load(self.path)

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


def resolve(spec: Spec, objects: Sequence[LoadedObject]) -> list[Probe | Pending]:
    """Resolve `spec` against the objects a process has mapped (from `loaded_objects(pid)`).

    Returns the probes, deduplicated by address (an alias probes its address once), or a
    single Pending when the spec's OBJECT: is not among `objects`. An unqualified spec only
    searches `objects`: at spawn time, before the loader mapped the libraries, resolve the
    `Pending` results of `resolve_static` instead. Raises a SpecError subclass otherwise.
    """
    if not objects:
        raise NoMatchError(f"probe spec {spec.text!r}: the process has no objects mapped")
    candidates = [_Candidate(o.path, o.bias, o.main, loaded=o) for o in objects]
    if spec.object is not None:
        chosen = [c for c in candidates if c.loaded and _object_matches(spec.object, c.loaded)]
        if not chosen:
            return [Pending(spec, spec.object)]
        return list(_resolve_in(spec, chosen))
    if spec.kind == "address":
        return list(_resolve_address(spec, candidates))
    if spec.kind == "line":   # the main executable's line table; OBJECT:FILE:LINE for others
        return list(_resolve_in(spec, [c for c in candidates if c.main] or candidates[:1]))
    return list(_resolve_unqualified(spec, candidates))


def resolve_all(specs: Iterable[Spec], objects: Sequence[LoadedObject]) -> list[Probe | Pending]:
    """`resolve` for many specs, each address probed once (the first spec naming it wins)."""
    seen: set[int] = set()
    result: list[Probe | Pending] = []
    for spec in specs:
        for item in resolve(spec, objects):
            if isinstance(item, Probe):
                if item.address in seen:
                    continue
                seen.add(item.address)
            result.append(item)
    return result


def _resolve_unqualified(spec: Spec, candidates: Sequence[_Candidate]) -> Iterable[Probe]:
    """The ambiguity rule: main executable, else the one library (exporting ones first)."""
    main = [c for c in candidates if c.main] or list(candidates[:1])
    for candidate in main:
        if _matches(spec, candidate):
            return _resolve_in(spec, [candidate])
    libraries = [c for c in candidates if c not in main]
    found = [(c, _matches(spec, c)) for c in libraries]
    found = [(c, m) for c, m in found if m]
    if not found:
        where = main[0].name if main else "the program"
        _refuse_variable(spec, candidates)
        raise NoMatchError(f"probe spec {spec.text!r}: {_nothing(spec)} in {where} or its "
                           "libraries" + _suggestion(spec, candidates))
    exporting = [(c, m) for c, m in found if any(s.exported for s in m)]
    pool = exporting or found
    if len(pool) > 1:
        names = ", ".join(c.name for c, _ in pool)
        raise AmbiguousSpecError(
            f"probe spec {spec.text!r} matches in several libraries ({names}): "
            f"write OBJECT:{spec.text}, e.g. {pool[0][0].name}:{spec.text}")
    return _resolve_in(spec, [pool[0][0]])


def _resolve_in(spec: Spec, candidates: Sequence[_Candidate]) -> Iterable[Probe]:
    """Every probe of `spec` in the given objects; NoMatchError when there is none."""
    probes: list[Probe] = []
    for candidate in candidates:
        if spec.kind == "symbol":
            probes += _symbol_probes(spec, candidate)
        elif spec.kind == "address":
            probes += _address_probes(spec, candidate, spec.address)
        elif spec.kind == "usdt":
            probes += usdt.usdt_probes(spec, candidate.path, candidate.bias, Probe)
        else:
            probes += _line_probes(spec, candidate)
    if not probes:
        where = ", ".join(c.name for c in candidates)
        _refuse_variable(spec, candidates)
        raise NoMatchError(f"probe spec {spec.text!r}: {_nothing(spec)} in {where}"
                           + _suggestion(spec, candidates))
    return _dedupe(probes)


def _nothing(spec: Spec) -> str:
    if spec.kind == "usdt":
        return f"no USDT probe matches {spec.pattern}"
    if spec.kind != "symbol":
        return "nothing to probe"
    verb = "matches" if spec.is_glob else "is named"
    return f"no function {verb} {spec.pattern}"


def _refuse_variable(spec: Spec, candidates: Sequence[_Candidate]) -> None:
    """A name that is a data symbol gets "X is a variable", not "no function is named X"."""
    if spec.kind == "symbol" and not spec.is_glob and not spec.offset:
        message = variable_error(spec.text, spec.pattern, [c.path for c in candidates])
        if message is not None:
            raise NoMatchError(message)


def _dedupe(probes: Iterable[Probe]) -> list[Probe]:
    seen: dict[int, Probe] = {}
    for probe in probes:
        seen.setdefault(probe.address, probe)
    return sorted(seen.values(), key=lambda p: p.address)


def _matches(spec: Spec, candidate: _Candidate) -> list:
    """The function symbols of `candidate` that a symbol spec names (its USDT sites for a
    usdt spec; [] for other kinds). A name is matched as written, then demangled."""
    if spec.kind == "usdt":
        return usdt.usdt_sites(spec, candidate.path)
    symbols = candidate.symbols
    if spec.kind == "symbol":
        if spec.is_glob:
            keep_cold = ".cold" in spec.pattern
            return [s for s in symbols.functions()
                    if (fnmatch.fnmatchcase(s.name, spec.pattern)
                        or demangle.matches(spec.pattern, s.name, glob=True))
                    and (keep_cold or not _COLD.search(s.name))]
        return symbols.lookup(spec.pattern) or (
            [s for s in symbols.functions() if demangle.matches(spec.pattern, s.name, False)]
            if demangle.is_cxx_spec(spec.pattern) else [])
    return []


def _symbol_probes(spec: Spec, candidate: _Candidate) -> list[Probe]:
    name, bias, path = candidate.name, candidate.bias + spec.offset, candidate.path
    return [Probe(spec.text, name, label, bias + value, path)
            for value, label in _symbol_sites(spec, candidate)]


#: ElfSymbols -> {(pattern, offset): [(value, label)]}: a spec's sites in one file, found
#: once per run (the static check, the preflight and the insertion each resolve the spec;
#: a glob over libc is thousands of names to match and choose among).
_SITES: "weakref.WeakKeyDictionary[ElfSymbols, dict]" = weakref.WeakKeyDictionary()


def _symbol_sites(spec: Spec, candidate: _Candidate) -> list[tuple[int, str]]:
    """(link-time value, label) of each function `spec` names in `candidate`, by value."""
    symbols = candidate.symbols
    known = _SITES.setdefault(symbols, {})
    key = (spec.pattern, spec.offset, spec.is_glob)
    if key in known:
        return known[key]
    by_value: dict[int, list[Symbol]] = {}
    for symbol in _matches(spec, candidate):
        by_value.setdefault(symbol.value, []).append(symbol)
    sites = []
    for value, named in sorted(by_value.items()):
        symbol = min(named, key=preference)
        if spec.offset:
            _check_boundary(spec, symbols, symbol, spec.offset)
        label = demangle.demangle(symbol.name) + (f"+{spec.offset:#x}" if spec.offset else "")
        sites.append((value, label))
    known[key] = sites
    return sites


def _check_boundary(spec: Spec, symbols: ElfSymbols, symbol: Symbol, offset: int) -> None:
    """A breakpoint must replace a first byte (stepper.boundary decodes each function once)."""
    where = f"{symbol.name}+{offset:#x}"
    if symbol.size and offset >= symbol.size:
        raise OffsetError(f"probe spec {spec.text!r}: {where} is past the end of "
                          f"{symbol.name} ({symbol.size:#x} bytes)")
    try:
        insn = _boundaries(symbols).straddling(symbol.value, symbol.value + offset,
                                               symbols.read)
    except emu.DecodeError as e:
        raise OffsetError(f"probe spec {spec.text!r}: cannot decode {symbol.name} ({e}) to "
                          f"check that {where} starts an instruction") from None
    if insn is not None:
        position = insn.address - symbol.value
        raise OffsetError(
            f"probe spec {spec.text!r}: {where} is inside the instruction at "
            f"{symbol.name}+{position:#x} ({insn.text}); nearest boundaries are "
            f"+{position:#x} and +{position + insn.length:#x}")


_BOUNDARIES: "weakref.WeakKeyDictionary[ElfSymbols, Boundaries]" = weakref.WeakKeyDictionary()


def _boundaries(symbols: ElfSymbols) -> Boundaries:
    """The instruction starts known in one file (the file is parsed once: ElfSymbols.load)."""
    found = _BOUNDARIES.get(symbols)
    if found is None:
        found = _BOUNDARIES[symbols] = Boundaries()
    return found


def _address_probes(spec: Spec, candidate: _Candidate, vaddr: int) -> list[Probe]:
    symbols = candidate.symbols
    if not symbols.is_code(vaddr):
        return []
    hit = symbols.containing(vaddr)
    if hit is not None and hit[1]:
        _check_boundary(spec, symbols, hit[0], hit[1])
    return [Probe(spec.text, candidate.name, demangle.label(symbols.describe(vaddr)),
                  candidate.bias + vaddr, candidate.path)]


def _resolve_address(spec: Spec, candidates: Sequence[_Candidate]) -> list[Probe]:
    """0xADDRESS: a link-time address of the main executable (what `nm` prints), or else an
    absolute runtime address inside any mapped object (what a debugger shows)."""
    main = next((c for c in candidates if c.main), candidates[0])
    probes = _address_probes(spec, main, spec.address)
    if probes:
        return probes
    for candidate in candidates:
        loaded = candidate.loaded
        if loaded is not None and loaded.start <= spec.address < loaded.end:
            probes = _address_probes(spec, candidate, spec.address - candidate.bias)
            if probes:
                return probes
    raise NoMatchError(f"probe spec {spec.text!r}: {spec.address:#x} is not in the code of "
                       f"{main.name} (give an address as `nm {main.name}` prints it)")


def _line_probes(spec: Spec, candidate: _Candidate) -> list[Probe]:
    symbols = candidate.symbols
    if not symbols.has_lines:
        raise NoMatchError(f"probe spec {spec.text!r}: {candidate.name} has no DWARF line "
                           "table (build it with -g)")
    files = symbols.lines(spec.file, spec.line)
    if not files:
        raise NoMatchError(f"probe spec {spec.text!r}: no source file matching {spec.file!r} "
                           f"in the line table of {candidate.name}")
    if len(files) > 1:
        raise AmbiguousSpecError(f"probe spec {spec.text!r}: {spec.file!r} matches "
                                 f"{', '.join(sorted(files))}: give more of the path")
    (path, addresses), = files.items()
    if not addresses:
        raise NoMatchError(f"probe spec {spec.text!r}: no code at line {spec.line} of {path}"
                           + _nearby_lines(symbols.lines_with_code(path), spec.line))
    return [Probe(spec.text, candidate.name, demangle.label(symbols.describe(a)),
                  candidate.bias + a, candidate.path) for a in addresses]


def _nearby_lines(lines: list[int], line: int) -> str:
    before = [n for n in lines if n < line][-1:]
    after = [n for n in lines if n > line][:1]
    nearby = before + after
    return f" (nearest lines with code: {', '.join(map(str, nearby))})" if nearby else ""


def _suggestion(spec: Spec, candidates: Sequence[_Candidate]) -> str:
    """For a misspelt exact name, the closest function names, so the fix is one edit away."""
    if spec.kind != "symbol" or spec.is_glob:
        return ""
    import difflib
    names: set[str] = set()
    for candidate in candidates:
        if candidate.main or len(candidates) == 1:
            names.update(s.name for s in candidate.symbols.functions())
    close = difflib.get_close_matches(spec.pattern, sorted(names), n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _object_matches(qualifier: str, obj: LoadedObject) -> bool:
    """OBJECT: names a loaded object by file name, soname, glob of those, or path."""
    if "/" in qualifier:
        return obj.same_file(qualifier)
    names = obj.names()
    if any(c in qualifier for c in GLOB_CHARS):
        return any(fnmatch.fnmatchcase(n, qualifier) for n in names)
    return qualifier in names


# -- resolving before the program starts ------------------------------------------------------

def resolve_static(spec: Spec, executable_path: str) -> list[Probe | Pending]:
    """Resolve `spec` against the executable file (bias 0) and the libraries it will load.

    Raises every error `resolve` would, before the program runs. Probes in the executable
    carry link-time addresses (the runtime ones for a non-PIE executable); anything in a
    library comes back as a Pending qualified with that library, to resolve when mapped.
    """
    try:
        closure = library_closure(executable_path)
    except LoaderError as e:
        raise ObjectNotFoundError(str(e)) from None
    main = _Candidate(closure[0], 0, True)
    libraries = [_Candidate(p, 0, False) for p in closure[1:]]
    if spec.object is None:
        if spec.kind == "address":
            return list(_resolve_address(spec, [main]))
        if spec.kind == "line":
            return list(_resolve_in(spec, [main]))
        probes = list(_resolve_unqualified(spec, [main] + libraries))
        return _pending_if_library(spec, probes, main)
    chosen = [c for c in [main] + libraries if file_matches(spec.object, c.path)]
    if chosen:
        probes = list(_resolve_in(spec, chosen))
        return _pending_if_library(spec, probes, main)
    return [_dlopen_pending(spec, main, closure)]


def _pending_if_library(spec: Spec, probes: list[Probe], main: _Candidate) -> list:
    result: list[Probe | Pending] = [p for p in probes if p.path == main.path]
    for path in dict.fromkeys(p.path for p in probes if p.path != main.path):
        name = os.path.basename(path)
        qualified = replace(spec, object=path)
        result.append(Pending(qualified, name, path=path))
    return result


def _dlopen_pending(spec: Spec, main: _Candidate, closure: list[str]) -> Pending:
    """OBJECT: outside the libraries the program links: only dlopen can bring it in."""
    qualifier = spec.object
    uses_dlopen = any({"dlopen", "dlmopen"} & ElfSymbols.load(p).imports for p in closure)
    path = find_on_disk(qualifier, main.path)
    if not uses_dlopen:
        linked = ", ".join(os.path.basename(p) for p in closure[1:]) or "none"
        raise ObjectNotFoundError(
            f"probe spec {spec.text!r}: {main.name} never loads {qualifier} (its libraries: "
            f"{linked}; it does not call dlopen)")
    if path is not None:
        _resolve_in(spec, [_Candidate(path, 0, False)])   # errors now, not at dlopen time
    return Pending(spec, os.path.basename(path) if path else qualifier, path=path)
