"""`stepper probe`: run (or attach to) a program with probes by name or address, count hits.

    stepper probe [--mode auto|emulate|xol|reinsert] [--json FILE] [--quiet] \\
                  -p 'SPEC [NAME=FETCHARG[:TYPE]]... [if EXPR]' [-p ...] \\
                  [--trace] [-o FILE] [--format text|jsonl|chrome] [--hist NAME] \\
                  [--max-hits N] [--interval S] [--duration S] (-- PROGRAM [ARGS...] | --pid PID)

One -p element is one probe: its SPEC, then what to fetch at each hit and a filter
(stepper.fetchargs, docs/trace.md); the per-hit work is stepper.probing.trace.
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
import functools
import os
import shutil
import sys

from .. import api
from ..binfmt import executable_image
from ..endings import detaching_on, end_like, program_decides
from ..errors import StepperError
from ..fetchargs import ProbeLine, parse_probe
from ..output import check_writable, claim, write_json
from ..records import ExitStatus
from ..placement import POLICIES, default_policy
from ..policy import MODES
from ..loaded import loaded_objects
from ..probe_set import ProbeSet
from ..probing.follow import Tracker, Traced, argv0_of, ppid_of
from ..probing.insert import Inserter
from ..probing.preflight import Preflight, expand_ifuncs
from ..probing.sites import settle_lines, settle_resolved
from ..probing.report import build_report, print_table
from ..probing.trace_options import SCHEMA, add_trace_arguments, check_trace, live, start_trace
from ..specs import SpecSyntaxError, parse_spec
from . import SUMMARIES

_realpath = functools.lru_cache(maxsize=256)(os.path.realpath)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "probe", help=SUMMARIES["probe"],
        description="Run PROGRAM (or attach to --pid) with probes at functions, lines or "
                    "addresses, and report the hits. Exits as the program did.")
    p.add_argument("--mode", choices=MODES, default="auto",
                   help="step strategy for every probe (default: auto)")
    p.add_argument("--placement", choices=POLICIES, default=None,
                   help="follow: keep stepper on the CPU of the thread it serves, and on a "
                        "quiet machine run it as SCHED_IDLE so the thread stays there "
                        "(default, or $STEPPER_PLACEMENT); pin: the same without "
                        "SCHED_IDLE; none: leave stepper's CPU affinity alone")
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
                                        "FILE:LINE (repeatable; see docs/probes.md), one "
                                        "argument each, optionally followed by "
                                        "NAME=FETCHARG[:TYPE]... and 'if EXPR' "
                                        "(docs/trace.md)")
    add_trace_arguments(p)
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


# -- the command ------------------------------------------------------------------------------

def run(args) -> int:
    argv = list(args.program)
    if argv and argv[0] == "--":
        argv = argv[1:]
    lines = [parse_probe(text) for group in args.probes for text in group]
    specs = [line.spec for line in lines]
    if args.json is not None:
        check_json(args.json, spawned=args.pid is None)
    args.tracer = None
    check_trace(args, lines)
    if args.pid is not None:
        if argv:
            raise StepperError("give either --pid PID or -- PROGRAM, not both")
        return run_attached(args, specs, lines)
    if not argv:
        raise StepperError("no program given: stepper probe -p SPEC -- PROGRAM [ARGS...]")
    addresses, named = split_specs(specs)   # before anything starts
    probe_set, preflight = ProbeSet(), Preflight(args.mode)
    exe = find_program(argv[0])
    if named:
        probe_set = ProbeSet.for_executable(named, exe)
        preflight.check(probe_set.waiting, exe)
        lines = settle_lines(lines, probe_set.waiting, exe)   # USDT $argN, parameter names
    proc = api.spawn(argv, args.mode)
    proc.placement = args.placement or default_policy()
    inserter = Inserter(proc, probe_set, preflight, args.quiet)
    try:
        inserter.add_addresses(addresses)
        inserter.update(strict=True)
        if args.json is not None:
            claim(args.json)   # the last check: nothing is created for a run refused above
        start_trace_on(args, lines, inserter)
    except BaseException:
        proc.kill()
        raise
    tracker = follow(args, proc, inserter, specs, argv[0], os.getpid())
    with program_decides(proc.pid), live(args, proc):   # Ctrl-C, SIGTERM: the program's
        status = proc.run()
    if _detached(status) and args.duration is not None:
        return finish(args, proc, tracker, status, wait_for=proc.pid)
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
        image.on_row = _on_row(args)
        image.update(strict=False)
        return image

    tracker = Tracker(Traced(proc, ppid, argv0, [inserter]), new_image,
                      list(dict.fromkeys(specs)))
    if args.tracer is not None:
        args.tracer.processes = lambda: list(tracker.processes)
    return tracker


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


def run_attached(args, specs: list[str], lines: list[ProbeLine]) -> int:
    """--pid: names resolve against what the process has mapped now; libraries it dlopens
    later get their probes as they appear. Ctrl-C detaches, leaving it running unharmed."""
    for text in specs:
        try:
            parse_spec(text)
        except SpecSyntaxError as e:
            raise StepperError(str(e)) from None
    if args.output is not None:
        check_writable(args.output)
    try:
        objects = loaded_objects(args.pid)
    except StepperError:
        raise StepperError(f"no process {args.pid} (or it is not yours to trace)") from None
    probe_set = ProbeSet.for_process(specs, objects)   # every spec error before attaching
    resolved, probe_set.probes = probe_set.probes, []
    probe_set._addresses = set()
    preflight = Preflight(args.mode)
    lines = settle_resolved(lines, resolved, {_realpath(o.path): o for o in objects})
    proc = api.attach(args.pid, mode=args.mode)
    proc.placement = args.placement or default_policy()
    inserter = Inserter(proc, probe_set, preflight, args.quiet)
    try:
        if args.json is not None:
            claim(args.json)
        start_trace_on(args, lines, inserter)
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
    with detaching_on(proc.detach) as detacher, live(args, proc):
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


def finish(args, proc: api.Process, tracker: Tracker, status,
           wait_for: int | None = None) -> int:
    tracer = args.tracer
    if tracer is not None:
        tracer.close()   # the trace stream complete before the report
    report = build_report(tracker, status, _detached(status), tracker.warnings())
    report.data["schema"] = SCHEMA
    if tracer is not None:
        report.data["trace"] = tracer.aggregate.as_json()
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
            if tracer is not None:
                for line in tracer.aggregate.text():
                    print(line, file=sys.stderr)
        if failed is not None:
            print(f"stepper: error: {failed}", file=sys.stderr)
        sys.stderr.flush()
    except OSError:
        pass   # no terminal left to print on; the exit status below is still the program's
    if wait_for is not None:   # --duration ended the tracing: stepper ends as the program
        return end_like(ExitStatus.from_wait(os.waitpid(wait_for, 0)[1]))
    if _detached(status):
        return 0
    return end_like(status)


def start_trace_on(args, lines: list[ProbeLine], inserter: Inserter) -> None:
    """The run's Tracer (its -o file created now, the last thing before the program runs),
    given to the breakpoints inserted so far and to those inserted later."""
    tracer = args.tracer = start_trace(args, lines)
    if tracer is not None:
        for row in inserter.rows:
            tracer.attach(inserter.proc, row)
        inserter.on_row = tracer.attach


def _on_row(args):
    tracer = args.tracer
    return None if tracer is None else tracer.attach


def _detached(status) -> bool:
    """Whether the run ended by letting the program go (Ctrl-C, SIGTERM) rather than its end."""
    return status is None or bool(getattr(status, "detached", False))


