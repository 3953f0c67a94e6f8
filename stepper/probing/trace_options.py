"""The options of `stepper probe` for traced probes (--trace, -o, --format, --hist,
--stack, --folded, --max-hits, --interval, --duration): declared, checked before anything starts, and turned
into the run's Tracer (stepper.probing.trace) and its live timers. docs/trace.md is the
user's reference.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time

from .. import api
from ..errors import StepperError
from ..fetchargs import ProbeLine
from ..output import SCHEMA, check_writable, claim, open_output
from .formats import FORMATS, Sink, make_writer
from .trace import Tracer

__all__ = ["SCHEMA", "add_trace_arguments", "check_trace", "start_trace", "live"]


def add_trace_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trace", action="store_true",
                   help="print one line per hit (stderr, or -o FILE), see --format")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write the trace stream to FILE (implies --trace)")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="trace stream: text (perf script-like, default), jsonl (one JSON "
                        "object per event) or chrome (Trace Event Format; implies --trace)")
    p.add_argument("--hist", metavar="NAME", action="append", default=[],
                   help="power-of-two histogram of fetch argument NAME (or retval, "
                        "duration_ns) in the summary (repeatable)")
    p.add_argument("--stack", action="store_true",
                   help="the user stack at each hit: in each trace line or JSON record "
                        "(\"stack\"), and counted by stack in the summary (docs/trace.md)")
    p.add_argument("--folded", metavar="FILE",
                   help="write the counted stacks to FILE in the folded format of flame "
                        "graphs, 'root;...;leaf count' (implies --stack)")
    p.add_argument("--max-hits", type=_positive_int, metavar="N",
                   help="per probe: after N events remove it (the program runs on untraced "
                        "there)")
    p.add_argument("--interval", type=_positive_float, metavar="S",
                   help="print the per-probe summary every S seconds while the program runs")
    p.add_argument("--duration", type=_positive_float, metavar="S",
                   help="after S seconds remove every probe and write the report (a "
                        "started program runs on, stepper ends as it ends; --pid detaches)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, not {text!r}")
    return value


def check_trace(args, lines: list[ProbeLine]) -> None:
    """The trace options' rules, checked before anything starts."""
    if args.output is not None or args.format is not None:
        args.trace = True
    args.format = args.format or "text"
    known = {name for line in lines for name in line.names}
    known |= {"retval", "duration_ns"} if any(line.is_return for line in lines) else set()
    numeric = {a.name for line in lines for a in line.args if a.numeric}
    numeric |= {"retval", "duration_ns"} & known
    for name in args.hist:
        if name not in known:
            raise StepperError(f"--hist {name}: no probe fetches {name!r} "
                               f"(names: {', '.join(sorted(known)) or 'none'})")
        if name not in numeric:
            raise StepperError(f"--hist {name}: {name!r} is not a number (a string or "
                               "symbol type); a histogram needs a u, s or x type")
    if args.folded is not None:
        args.stack = True
        if not args.folded:
            raise StepperError("--folded needs a file name")
        if args.folded == "-" and args.pid is None:
            raise StepperError("--folded -: stdout belongs to the program; write the stacks "
                               "to a file")
        check_writable(args.folded)
    if args.output is not None:
        if args.output == "-" and args.pid is None:
            raise StepperError("-o -: stdout belongs to the program; write the trace to a "
                               "file, or leave -o out for stderr")
        check_writable(args.output)


def start_trace(args, lines: list[ProbeLine]) -> Tracer | None:
    """The Tracer of a run (None when every probe only counts), its output opened now."""
    if not (args.trace or args.hist or args.max_hits or args.stack
            or not all(l.plain for l in lines)):
        return None
    folded = None
    if args.folded is not None:
        claim(args.folded)
        folded = open_output(args.folded)
    writer = None
    if args.trace:
        path = None if args.output in (None, "-") else args.output
        sink = Sink.open(path) if args.output != "-" else Sink(sys.stdout, owned=False)
        writer = make_writer(args.format, sink)
    return Tracer(lines, writer, args.hist, args.max_hits, args.stack, folded)


@contextlib.contextmanager
def live(args, proc: api.Process):
    """--interval: the summary every S seconds; --duration: tracing ends after S seconds
    (the engine detaches, which is safe from another thread)."""
    stop = threading.Event()
    threads = []
    tracer = args.tracer
    if args.interval is not None and tracer is not None and not args.quiet:
        def tick() -> None:
            while not stop.wait(args.interval):
                with tracer.lock:
                    text = tracer.aggregate.text()
                print(f"stepper: {time.strftime('%H:%M:%S')}\n" + "\n".join(text),
                      file=sys.stderr, flush=True)
        threads.append(threading.Thread(target=tick, daemon=True))
    if args.duration is not None:
        def end() -> None:
            if not stop.wait(args.duration):
                proc.detach()
        threads.append(threading.Thread(target=end, daemon=True))
    for t in threads:
        t.start()
    try:
        yield
    finally:
        stop.set()
        for t in threads:
            t.join()
