"""`stepper probe`: run (or attach to) a program with probes by name or address, count hits.

    stepper probe [--mode auto|emulate|xol|reinsert] [--json FILE] [--quiet] \\
                  -p SPEC [-p SPEC ...] (-- PROGRAM [ARGS...] | --pid PID)

SPEC is any form of docs/probes.md: SYMBOL[+OFF], OBJECT:SYMBOL, globs, 0xADDRESS, FILE:LINE.
Every spec is resolved against the files before the program starts, so every error is one line
and the program never runs. Probes in the executable are inserted at the exec stop; probes in
libraries when the dynamic loader reports them mapped (a breakpoint on `_dl_debug_state`, not
shown in the table), before any of their code runs past the probe. IFUNC symbols become the
implementations their resolver can return (stepper.ifunc).

The program's stdin/stdout/stderr are its own; stepper writes only to stderr, and ends the way
the program did (same exit code, or killed by the same signal, as strace does).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import shutil
import sys
from dataclasses import dataclass, field

import emu

from .. import api, ifunc, policy
from ..binfmt import executable_image
from ..endings import detaching_on, end_like, program_decides
from ..errors import StepperError
from ..output import check_writable, claim, write_json
from ..placement import POLICIES, default_policy
from ..policy import MODES
from ..specs import Pending, Probe, ProbeSet, SpecSyntaxError, parse_spec
from ..probing.follow import Tracker, Traced, argv0_of, ppid_of
from ..probing.report import build_report, print_table
from ..symbols import (RT_CONSISTENT, ElfSymbols, LoadedObject, loaded_objects,
                       r_debug_breakpoint, r_debug_state)
from . import SUMMARIES

_realpath = functools.lru_cache(maxsize=256)(os.path.realpath)
_symbols = functools.lru_cache(maxsize=64)(ElfSymbols.load)   # one run: files do not change
PROGRESS_MIN = 200      # fewer probes than this insert too fast to need a progress line
PROGRESS_EVERY = 100


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "probe", help=SUMMARIES["probe"],
        description="Run PROGRAM (or attach to --pid) with probes at functions, lines or "
                    "addresses, and report the hits. Exits as the program did.")
    p.add_argument("--mode", choices=MODES, default="auto",
                   help="step strategy for every probe (default: auto)")
    p.add_argument("--placement", choices=POLICIES, default=None,
                   help="follow: keep stepper on the CPU of the thread it serves (default, "
                        "or $STEPPER_PLACEMENT); none: leave stepper's CPU affinity alone")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE")
    p.add_argument("--quiet", action="store_true",
                   help="print nothing but errors (no progress, table or warnings)")
    p.add_argument("--verbose", action="store_true",
                   help="table: every probe site with its address, instruction, strategy "
                        "and boost note, zero-hit sites included")
    p.add_argument("--per-process", action="store_true",
                   help="table: one per process (fork, exec) instead of the totals")
    p.add_argument("--pid", type=int, metavar="PID",
                   help="attach to running process PID instead of starting PROGRAM")
    p.add_argument("-p", "--probe", dest="probes", action="append", nargs="+", required=True,
                   metavar="SPEC", help="SYMBOL[+OFF], OBJECT:SYMBOL, 'GLOB', 0xADDRESS, "
                                        "FILE:LINE (repeatable; see docs/probes.md)")
    p.add_argument("program", nargs=argparse.REMAINDER, metavar="-- PROGRAM [ARGS...]")
    p.set_defaults(run=run)


def parse_address(spec: str) -> int:
    """An address as nm prints it (hex, with or without 0x)."""
    try:
        value = int(spec, 16)
    except ValueError:
        raise StepperError(f"bad probe {spec!r}: expected a hexadecimal address such as "
                           f"0x401136") from None
    if value < 0:
        raise StepperError(f"bad probe {spec!r}: negative address")
    return value


# -- what to probe, decided before the program runs -------------------------------------------

def split_specs(specs: list[str]) -> tuple[list[str], list[str]]:
    """(bare addresses of the executable, everything else); syntax errors raised here.

    Bare addresses keep the engine's own checks at the exec stop (a duplicate is an error,
    as two identical addresses are a typo); named specs dedupe (the first spec wins)."""
    addresses, named = [], []
    for text in specs:
        try:
            spec = parse_spec(text)
        except SpecSyntaxError as e:
            if text[:2].lower() == "0x":
                parse_address(text)
            raise StepperError(str(e)) from None
        (addresses if spec.kind == "address" and spec.object is None else named).append(text)
    return addresses, named


def find_program(name: str) -> str:
    """The ELF file `name` runs (PATH searched as exec does; a script's #! interpreter, see
    stepper.binfmt), or a one-line error."""
    path = name if "/" in name else shutil.which(name)
    if path is None or not os.path.isfile(path):
        raise StepperError(f"cannot run {name}: no such file"
                           + ("" if "/" in name else " in PATH"))
    if not os.access(path, os.X_OK):
        raise StepperError(f"cannot run {name}: not executable")
    return executable_image(path)   # a #! script: its interpreter is what runs


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
            insn = emu.decode(symbols.read(probe.address, 15), probe.address)
            policy.choose(self.mode, insn)
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


# -- inserting, at the exec stop and whenever the loader maps objects -------------------------

@dataclass
class Row:
    """One probe of the table: where it came from, and its breakpoint."""

    spec: str
    object: str
    symbol: str | None
    bp: api.Breakpoint
    group: str | None = None   # the IFUNC an implementation was probed for (one table row)


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

    # bare addresses: the engine's first form, unchanged
    def add_addresses(self, texts: list[str]) -> None:
        bias = self.proc.load_bias
        for text in texts:
            bp = self.proc.break_at(parse_spec(text).address + bias)
            self.addresses.add(bp.address)
            symbol = bp.symbol   # the containing function, as the first form reported it
            obj = os.path.basename(symbol.object if symbol else self.proc.exe)
            self.rows.append(Row(text, obj, symbol.name if symbol else None, bp))

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
        progress = Progress(len(sites), enabled=not self.quiet)
        for probe in sites:
            progress.step()
            if probe.address in self.addresses:
                continue
            obj = by_path.get(_realpath(probe.path))
            if obj is not None and (_realpath(probe.path),
                                    probe.address - obj.bias) in self.preflight.skip:
                continue
            try:
                bp = self.proc.break_at(probe.address)
            except StepperError as e:
                if strict:
                    raise StepperError(f"probe spec {probe.spec!r}: {e}") from None
                self.notes.append(f"probe spec {probe.spec!r}: {probe.symbol} in "
                                  f"{probe.object} not probed: {e}")
                continue
            self.addresses.add(probe.address)
            self.rows.append(Row(probe.spec, probe.object, probe.symbol, bp, probe.group))
            progress.inserted += 1
        progress.end()

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


# -- the command ------------------------------------------------------------------------------

def run(args) -> int:
    argv = list(args.program)
    if argv and argv[0] == "--":
        argv = argv[1:]
    specs = [spec for group in args.probes for spec in group]
    if args.json is not None:
        check_json(args.json, spawned=args.pid is None)
    if args.pid is not None:
        if argv:
            raise StepperError("give either --pid PID or -- PROGRAM, not both")
        return run_attached(args, specs)
    if not argv:
        raise StepperError("no program given: stepper probe -p SPEC -- PROGRAM [ARGS...]")
    addresses, named = split_specs(specs)   # before anything starts
    probe_set, preflight = ProbeSet(), Preflight(args.mode)
    exe = find_program(argv[0])
    if named:
        probe_set = ProbeSet.for_executable(named, exe)
        preflight.check(probe_set.waiting, exe)
    proc = api.spawn(argv, args.mode)
    proc.placement = args.placement or default_policy()
    inserter = Inserter(proc, probe_set, preflight, args.quiet)
    try:
        inserter.add_addresses(addresses)
        inserter.update(strict=True)
        if args.json is not None:
            claim(args.json)   # the last check: nothing is created for a run refused above
    except BaseException:
        proc.kill()
        raise
    tracker = follow(args, proc, inserter, specs, argv[0], os.getpid())
    with program_decides(proc.pid):   # Ctrl-C, SIGTERM: the program's to decide
        status = proc.run()
    return finish(args, proc, tracker, status)


def follow(args, proc: api.Process, inserter: Inserter, specs: list[str], argv0: str,
           ppid: int) -> Tracker:
    """Probes and counts per process: forked children carry theirs, an exec'd image gets
    every named spec resolved again (stepper.probing.follow); bare addresses are the first
    image's only."""
    named = [text for text in dict.fromkeys(specs) if not _bare_address(text)]

    def new_image(process: api.Process) -> Inserter:
        probe_set = ProbeSet.for_new_image(named, process.exe)
        preflight = Preflight(args.mode, strict=False)
        preflight.check(probe_set.waiting, _realpath(process.exe))
        image = Inserter(process, probe_set, preflight, quiet=True)
        image.update(strict=False)
        return image

    return Tracker(Traced(proc, ppid, argv0, [inserter]), new_image,
                   list(dict.fromkeys(specs)))


def check_json(path: str, spawned: bool) -> None:
    """--json's rules, checked before anything runs. `-` (stdout) only with --pid: a program
    stepper starts shares stepper's stdout, and the JSON would land in the middle of the
    program's own output (`stepper probe ... | jq` would break)."""
    if not path:
        raise StepperError("--json needs a file name")
    if path == "-" and spawned:
        raise StepperError("--json -: stdout belongs to the program; write the report to a "
                           "file, or to another descriptor: --json /dev/fd/3 3>report.json")
    check_writable(path)


def run_attached(args, specs: list[str]) -> int:
    """--pid: names resolve against what the process has mapped now; libraries it dlopens
    later get their probes as they appear. Ctrl-C detaches, leaving it running unharmed."""
    for text in specs:
        try:
            parse_spec(text)
        except SpecSyntaxError as e:
            raise StepperError(str(e)) from None
    try:
        objects = loaded_objects(args.pid)
    except StepperError:
        raise StepperError(f"no process {args.pid} (or it is not yours to trace)") from None
    probe_set = ProbeSet.for_process(specs, objects)   # every spec error before attaching
    resolved, probe_set.probes = probe_set.probes, []
    probe_set._addresses = set()
    preflight = Preflight(args.mode)
    proc = api.attach(args.pid, mode=args.mode)
    proc.placement = args.placement or default_policy()
    inserter = Inserter(proc, probe_set, preflight, args.quiet)
    try:
        if args.json is not None:
            claim(args.json)
        by_path = {_realpath(o.path): o for o in objects}
        sites = []
        for probe in resolved:
            obj = by_path.get(_realpath(probe.path))
            sites += expand_ifuncs([probe], obj) if obj is not None else [probe]
        inserter._insert(sites, by_path, strict=True)
        if probe_set.waiting:
            inserter._watch_loader(objects)
    except BaseException:
        proc.detach()
        raise
    tracker = follow(args, proc, inserter, specs, argv0_of(args.pid) or os.path.basename(
        proc.exe), ppid_of(args.pid))
    with detaching_on(proc.detach) as detacher:
        try:
            if not args.quiet:
                print(f"stepper: attached to {args.pid} with {len(inserter.rows)} probes; "
                      "Ctrl-C or SIGTERM detaches", file=sys.stderr, flush=True)
            status = proc.run()
        except KeyboardInterrupt:   # run() detached the process: it carries on untraced
            proc.detach()           # (and if Ctrl-C came before run(), this lets it go)
            status = None
        except StepperError:
            if not detacher.requested:
                raise
            status = None           # detached before run() started: nothing to run
    return finish(args, proc, tracker, status)


def _bare_address(text: str) -> bool:
    spec = parse_spec(text)
    return spec.kind == "address" and spec.object is None


def finish(args, proc: api.Process, tracker: Tracker, status) -> int:
    report = build_report(tracker, status, _detached(status), tracker.warnings())
    failed = None
    if args.json is not None:   # first: a terminal gone (hangup) must not cost the file
        try:
            write_json(args.json, report.data)
        except StepperError as e:   # claimed at the start, yet failed (a full disk)
            failed = e
    try:
        if not args.quiet:
            for line in report.data["warnings"]:
                print(f"stepper: warning: {line}", file=sys.stderr)
            print_table(report, args.verbose, args.per_process)
        if failed is not None:
            print(f"stepper: error: {failed}", file=sys.stderr)
        sys.stderr.flush()
    except OSError:
        pass   # no terminal left to print on; the exit status below is still the program's
    if _detached(status):
        return 0
    return end_like(status)


def _detached(status) -> bool:
    """Whether the run ended by letting the program go (Ctrl-C, SIGTERM) rather than its end."""
    return status is None or bool(getattr(status, "detached", False))


