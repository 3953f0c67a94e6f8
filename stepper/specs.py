"""Probe specs (`-p`): parse them, and resolve them to runtime addresses in loaded objects.

Forms (docs/probes.md has the user's version):
    SYMBOL  SYMBOL+OFFSET  OBJECT:SYMBOL[+OFFSET]  GLOB  OBJECT:GLOB
    0xADDRESS  OBJECT:0xADDRESS  FILE:LINE  OBJECT:FILE:LINE

Where an unqualified spec looks (the ambiguity rule): the main executable first; if it has no
match, the shared libraries, preferring those that export a match (a plain name then means
what a call by that name from the program reaches, so `getpid` is libc's, not the loader's
private copy); two or more libraries left is an AmbiguousSpecError naming them.

Two moments resolve specs. Before the program starts, `resolve_static` checks every spec
against the executable and the libraries it will load (found like the dynamic loader finds
them), so every error comes out before anything runs; its `Pending` results name the library
each spec settled on. Once the process exists, `resolve` turns specs into runtime addresses
for whatever `loaded_objects(pid)` reports, and `Pending.resolve` retries when libraries
appear. `ProbeSet` does that bookkeeping for the engine.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

import emu

from .errors import StepperError
from .symbols import ElfFileError, ElfSymbols, LoadedObject, Symbol, preference

__all__ = [
    "Spec", "Probe", "Pending", "ProbeSet", "parse_spec", "resolve", "resolve_static",
    "resolve_all", "SpecError", "SpecSyntaxError", "NoMatchError", "AmbiguousSpecError",
    "OffsetError", "ObjectNotFoundError", "library_closure", "find_library",
]

GLOB_CHARS = "*?["
MAX_INSTRUCTION_LENGTH = 15
# gcc's `f.cold` symbols label the rarely-run tail of f, jumped to from f, never called: a glob
# over "functions" leaves them out (an exact name, or a glob that says .cold, still reaches them).
_COLD = re.compile(r"\.cold(\.\d+)?$")
DEFAULT_LIBRARY_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64",
                        "/usr/lib64", "/lib", "/usr/lib")


class SpecError(StepperError):
    """Base of every probe-spec error; the message is one line naming the spec."""


class SpecSyntaxError(SpecError):
    """The text is not any spec form."""


class NoMatchError(SpecError):
    """No function, address or line matches the spec."""


class AmbiguousSpecError(SpecError):
    """An unqualified spec matches in several libraries; OBJECT: must choose."""


class OffsetError(SpecError):
    """SYMBOL+OFFSET (or an address) does not start an instruction of that function."""


class ObjectNotFoundError(SpecError):
    """OBJECT: names a file the program never loads."""


# -- parsing ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Spec:
    """One parsed probe spec. `kind` is "symbol", "address" or "line".

    symbol: `pattern` (exact name or shell glob) and `offset`; address: `address` (a
    link-time address of `object`, or of the main executable); line: `file` and `line`.
    `object` is the OBJECT: qualifier (a file name, soname, path or glob) or None.
    """

    text: str
    kind: str
    object: str | None = None
    pattern: str | None = None
    offset: int = 0
    file: str | None = None
    line: int | None = None
    address: int | None = None

    @property
    def is_glob(self) -> bool:
        return self.pattern is not None and any(c in self.pattern for c in GLOB_CHARS)


def parse_spec(text: str) -> Spec:
    """Parse one `-p` argument. Raises SpecSyntaxError with a one-line message."""
    if not text:
        raise SpecSyntaxError("empty probe spec")
    if any(c.isspace() for c in text):
        raise SpecSyntaxError(f"probe spec {text!r} contains whitespace")
    head, sep, tail = text.rpartition(":")
    if sep and tail.isdigit():
        return _parse_line(text, head, int(tail))
    obj, sep, rest = text.partition(":")
    if not sep:
        obj, rest = None, text
    elif not obj:
        raise SpecSyntaxError(f"empty object name in probe spec {text!r} (write OBJECT:SYMBOL)")
    elif ":" in rest:
        raise SpecSyntaxError(f"too many ':' in probe spec {text!r} "
                              "(forms: OBJECT:SYMBOL, FILE:LINE, OBJECT:FILE:LINE)")
    if not rest:
        raise SpecSyntaxError(f"empty symbol name in probe spec {text!r}")
    if rest[:2].lower() == "0x":
        return Spec(text, "address", object=obj, address=_number(text, rest, "address"))
    if re.fullmatch(r"[0-9][0-9a-fA-F]*", rest):   # bare hex, as `nm` prints it
        return Spec(text, "address", object=obj, address=int(rest, 16))
    name, plus, offset = rest.partition("+")
    if not name:
        raise SpecSyntaxError(f"empty symbol name in probe spec {text!r}")
    return Spec(text, "symbol", object=obj, pattern=name,
                offset=_number(text, offset, "offset") if plus else 0)


def _parse_line(text: str, head: str, line: int) -> Spec:
    obj, sep, file = head.rpartition(":")
    if ":" in obj:
        raise SpecSyntaxError(f"too many ':' in probe spec {text!r}")
    if not file or (sep and not obj):
        raise SpecSyntaxError(f"empty file name in probe spec {text!r} (write FILE:LINE)")
    if line == 0:
        raise SpecSyntaxError(f"line numbers start at 1 in probe spec {text!r}")
    return Spec(text, "line", object=obj or None, file=file, line=line)


def _number(text: str, value: str, what: str) -> int:
    """A decimal number, or hex after 0x: what people write after `+` and what nm prints."""
    if re.fullmatch(r"0[xX][0-9a-fA-F]+", value):
        return int(value, 16)
    if re.fullmatch(r"[0-9]+", value):
        return int(value, 10)
    raise SpecSyntaxError(f"bad {what} {value!r} in probe spec {text!r} "
                          "(write a decimal number or 0x followed by hex digits)")


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
        else:
            probes += _line_probes(spec, candidate)
    if not probes:
        where = ", ".join(c.name for c in candidates)
        raise NoMatchError(f"probe spec {spec.text!r}: {_nothing(spec)} in {where}"
                           + _suggestion(spec, candidates))
    return _dedupe(probes)


def _nothing(spec: Spec) -> str:
    if spec.kind != "symbol":
        return "nothing to probe"
    verb = "matches" if spec.is_glob else "is named"
    return f"no function {verb} {spec.pattern}"


def _dedupe(probes: Iterable[Probe]) -> list[Probe]:
    seen: dict[int, Probe] = {}
    for probe in probes:
        seen.setdefault(probe.address, probe)
    return sorted(seen.values(), key=lambda p: p.address)


def _matches(spec: Spec, candidate: _Candidate) -> list[Symbol]:
    """The function symbols of `candidate` that a symbol spec names ([] for other kinds)."""
    symbols = candidate.symbols
    if spec.kind == "symbol":
        if spec.is_glob:
            keep_cold = ".cold" in spec.pattern
            return [s for s in symbols.functions() if fnmatch.fnmatchcase(s.name, spec.pattern)
                    and (keep_cold or not _COLD.search(s.name))]
        return symbols.lookup(spec.pattern)
    return []


def _symbol_probes(spec: Spec, candidate: _Candidate) -> list[Probe]:
    by_value: dict[int, list[Symbol]] = {}
    for symbol in _matches(spec, candidate):
        by_value.setdefault(symbol.value, []).append(symbol)
    probes = []
    for value, named in sorted(by_value.items()):
        symbol = min(named, key=preference)
        if spec.offset:
            _check_boundary(spec, candidate.symbols, symbol, spec.offset)
        label = symbol.name + (f"+{spec.offset:#x}" if spec.offset else "")
        probes.append(Probe(spec.text, candidate.name, label,
                            candidate.bias + value + spec.offset, candidate.path))
    return probes


def _check_boundary(spec: Spec, symbols: ElfSymbols, symbol: Symbol, offset: int) -> None:
    """Decode forward from the function's start: a breakpoint must replace a first byte."""
    where = f"{symbol.name}+{offset:#x}"
    if symbol.size and offset >= symbol.size:
        raise OffsetError(f"probe spec {spec.text!r}: {where} is past the end of "
                          f"{symbol.name} ({symbol.size:#x} bytes)")
    code = symbols.read(symbol.value, offset + MAX_INSTRUCTION_LENGTH)
    try:
        insn = emu.straddling(code, symbol.value, symbol.value + offset)
    except emu.DecodeError as e:
        raise OffsetError(f"probe spec {spec.text!r}: cannot decode {symbol.name} ({e}) to "
                          f"check that {where} starts an instruction") from None
    if insn is not None:
        position = insn.address - symbol.value
        raise OffsetError(
            f"probe spec {spec.text!r}: {where} is inside the instruction at "
            f"{symbol.name}+{position:#x} ({insn.text}); nearest boundaries are "
            f"+{position:#x} and +{position + insn.length:#x}")


def _address_probes(spec: Spec, candidate: _Candidate, vaddr: int) -> list[Probe]:
    symbols = candidate.symbols
    if not symbols.is_code(vaddr):
        return []
    hit = symbols.containing(vaddr)
    if hit is not None and hit[1]:
        _check_boundary(spec, symbols, hit[0], hit[1])
    return [Probe(spec.text, candidate.name, symbols.describe(vaddr), candidate.bias + vaddr,
                  candidate.path)]


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
    return [Probe(spec.text, candidate.name, symbols.describe(a), candidate.bias + a,
                  candidate.path) for a in addresses]


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
    closure = library_closure(executable_path)
    main = _Candidate(closure[0], 0, True)
    libraries = [_Candidate(p, 0, False) for p in closure[1:]]
    if spec.object is None:
        if spec.kind == "address":
            return list(_resolve_address(spec, [main]))
        if spec.kind == "line":
            return list(_resolve_in(spec, [main]))
        probes = list(_resolve_unqualified(spec, [main] + libraries))
        return _pending_if_library(spec, probes, main)
    chosen = [c for c in [main] + libraries if _file_matches(spec.object, c.path)]
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
    path = _find_on_disk(qualifier, main.path)
    if not uses_dlopen:
        linked = ", ".join(os.path.basename(p) for p in closure[1:]) or "none"
        raise ObjectNotFoundError(
            f"probe spec {spec.text!r}: {main.name} never loads {qualifier} (its libraries: "
            f"{linked}; it does not call dlopen)")
    if path is not None:
        _resolve_in(spec, [_Candidate(path, 0, False)])   # errors now, not at dlopen time
    return Pending(spec, os.path.basename(path) if path else qualifier, path=path)


def _find_on_disk(qualifier: str, executable: str) -> str | None:
    if "/" in qualifier:
        return qualifier if os.path.isfile(qualifier) else None
    if any(c in qualifier for c in GLOB_CHARS):
        return None
    return find_library(qualifier, ElfSymbols.load(executable), executable)


def _file_matches(qualifier: str, path: str) -> bool:
    if "/" in qualifier:
        try:
            return os.path.samefile(qualifier, path)
        except OSError:
            return False
    names = {os.path.basename(path)}
    try:
        soname = ElfSymbols.load(path).soname
    except ElfFileError:
        soname = None
    if soname:
        names.add(soname)
    if any(c in qualifier for c in GLOB_CHARS):
        return any(fnmatch.fnmatchcase(n, qualifier) for n in names)
    return qualifier in names


def library_closure(executable_path: str) -> list[str]:
    """The executable, then every library it loads at startup, breadth-first like the loader
    (DT_NEEDED found via DT_RPATH, LD_LIBRARY_PATH, DT_RUNPATH, the ldconfig cache and the
    default directories), then its interpreter. Paths are real paths; missing libraries are
    left out (the loader itself will report them when the program starts).
    """
    if not os.path.isfile(executable_path):
        raise ObjectNotFoundError(f"no such executable: {executable_path}")
    first = os.path.realpath(executable_path)
    order = [first]
    queue = [first]
    while queue:
        path = queue.pop(0)
        symbols = ElfSymbols.load(path)
        for needed in symbols.needed:
            found = find_library(needed, symbols, path)
            if found is not None and os.path.realpath(found) not in order:
                order.append(os.path.realpath(found))
                queue.append(os.path.realpath(found))
    interpreter = ElfSymbols.load(first).interpreter
    if interpreter and os.path.isfile(interpreter):
        real = os.path.realpath(interpreter)
        if real not in order:
            order.append(real)
    return order


def find_library(name: str, requester: ElfSymbols, requester_path: str) -> str | None:
    """Where the dynamic loader would find library `name` for `requester`, or None."""
    if "/" in name:
        return name if os.path.isfile(name) else None
    origin = os.path.dirname(os.path.realpath(requester_path))

    def expand(dirs: Iterable[str]) -> list[str]:
        return [d.replace("$ORIGIN", origin).replace("${ORIGIN}", origin) for d in dirs]

    search: list[str] = []
    if not requester.runpath:
        search += expand(requester.rpath)
    search += [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    search += expand(requester.runpath)
    for directory in search:
        candidate = os.path.join(directory, name)
        if _is_x86_64_elf(candidate):
            return candidate
    cached = _ldconfig_cache().get(name)
    if cached and os.path.isfile(cached):
        return cached
    for directory in DEFAULT_LIBRARY_DIRS:
        candidate = os.path.join(directory, name)
        if _is_x86_64_elf(candidate):
            return candidate
    return None


def _is_x86_64_elf(path: str) -> bool:
    try:
        with open(path, "rb") as stream:
            header = stream.read(20)
    except OSError:
        return False
    return header[:4] == b"\x7fELF" and header[4] == 2 and header[18:20] == b"\x3e\x00"


@functools.lru_cache(maxsize=1)
def _ldconfig_cache() -> dict[str, str]:
    """name -> path of the x86-64 entries of `ldconfig -p` (the loader's own cache)."""
    ldconfig = shutil.which("ldconfig") or next(
        (p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig") if os.path.exists(p)), None)
    if ldconfig is None:
        return {}
    try:
        output = subprocess.run([ldconfig, "-p"], capture_output=True, text=True,
                                timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    cache: dict[str, str] = {}
    for line in output.splitlines():
        match = re.match(r"\s+(\S+) \(([^)]*)\) => (\S+)", line)
        if match and "x86-64" in match.group(2):
            cache.setdefault(match.group(1), match.group(3))
    return cache


# -- the engine's bookkeeping -----------------------------------------------------------------

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
