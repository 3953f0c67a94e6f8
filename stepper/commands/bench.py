"""`stepper bench`: per-hit cost of each step strategy, against gdb, libdebug and a C floor.

    stepper bench [--hits N] [--repeat R] [--placement same|free|split|all] [--load N] \\
                  [--startup-repeat S] [--startup-only] [--steps N] [--json FILE] [--plot FILE.png]
    stepper bench --trace [--hits N] [--repeat R] [--placement same|free|split] [--json FILE]

The table goes to stdout, progress to stderr. See docs/bench.md for what each figure means.
"""

from __future__ import annotations

import sys

from ..bench import Config, run_bench
from ..bench.placement import PLACEMENTS
from ..bench.report import table
from ..output import check_writable, write_json
from . import SUMMARIES

#: Without --placement: the two placements users meet (same CPU, unpinned); `split` only on request.
DEFAULT_PLACEMENTS = ("same", "free")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help=SUMMARIES["bench"],
        description="Measure the per-hit overhead of stepper's strategies (emulate, xol, "
                    "boost, reinsert) on a bundled tracee, against a C floor tracer, gdb and "
                    "libdebug, under CPU placements. Figures are medians over the repeats.")
    p.add_argument("--hits", type=int, default=None, metavar="N",
                   help="breakpoint hits per run (default: 5000; with --trace, calls of the "
                        "traced function: 100000)")
    p.add_argument("--repeat", type=int, default=3, metavar="R",
                   help="runs of every figure; the median is reported (default: 3)")
    p.add_argument("--placement", choices=(*PLACEMENTS, "all"), default=None,
                   help="same: tracer and tracee on one CPU; free: unpinned; split: on two "
                        "CPUs; all: the three (default: same and free)")
    p.add_argument("--load", type=int, default=0, metavar="N",
                   help="measure stepper's figures of each placement again while N "
                        "busy-looping processes run (default: 0, no second measurement)")
    p.add_argument("--startup-repeat", type=int, default=5, metavar="S",
                   help="runs of each start-up figure (--help, one libc probe, every libc "
                        "function; warm and cold cache); the median is reported (default: 5; "
                        "0: no start-up figures)")
    p.add_argument("--startup-only", action="store_true",
                   help="measure the start-up figures only (no per-hit figures)")
    p.add_argument("--steps", type=int, default=20000, metavar="N",
                   help="timed instruction steps per figure of the debugger rows "
                        "(default: 20000)")
    p.add_argument("--trace", action="store_true",
                   help="measure traced probes instead (counting, arguments with a string, "
                        "%%return) per call, against ltrace, gdb dprintf, bpftrace and uftrace")
    p.add_argument("--rows", metavar="ROW,...",
                   help="with --trace: only these rows (default: all; see docs/bench.md)")
    p.add_argument("--json", metavar="FILE", help="write every figure as JSON to FILE")
    p.add_argument("--plot", metavar="FILE.png", help="write a bar chart (needs matplotlib)")
    p.set_defaults(run=run)


def run(args) -> int:
    if args.trace:
        return _run_trace(args)
    if args.rows is not None:
        from ..errors import StepperError

        raise StepperError("--rows needs --trace")
    if args.hits is None:
        args.hits = 5000
    if args.placement is None:
        placements = DEFAULT_PLACEMENTS
    elif args.placement == "all":
        placements = PLACEMENTS
    else:
        placements = (args.placement,)
    config = Config(hits=args.hits, repeat=args.repeat, placements=placements, load=args.load,
                    steps=args.steps,
                    progress=lambda line: print(line, file=sys.stderr, flush=True))
    for path in (args.json, args.plot):
        if path:
            check_writable(path)
    if args.plot:
        _check_plot_possible(args.plot)
    if args.startup_repeat < 0 or (args.startup_only and args.startup_repeat < 1):
        from ..errors import StepperError

        raise StepperError(f"--startup-repeat must be at least {int(args.startup_only)}, "
                           f"not {args.startup_repeat}")
    if args.startup_only and args.plot:
        from ..errors import StepperError

        raise StepperError("--plot charts the per-hit figures, which --startup-only skips")
    report = {} if args.startup_only else run_bench(config)
    if args.startup_repeat:
        from ..bench import startup

        report["startup"] = startup.measure(args.startup_repeat, progress=config.progress)
    if args.json:  # files first: a closed stdout must not lose a minute of measurements
        write_json(args.json, report)
    if args.plot:
        from ..bench.plot import plot

        plot(report, args.plot)
    lines = [table(report)] if not args.startup_only else []
    if "startup" in report:
        from ..bench.startup import table_lines

        lines.append("\n".join(([""] if lines else []) + table_lines(report["startup"])))
    print("\n".join(lines))
    return 0


def _run_trace(args) -> int:
    """`--trace`: the traced-probe rows (stepper.bench.trace_report), placement `same` unless
    one is named."""
    from ..bench.trace_report import check_rows, run_trace_bench, table as trace_table
    from ..errors import StepperError

    calls = 100_000 if args.hits is None else args.hits
    if calls < 1 or args.repeat < 1:
        raise StepperError("--hits and --repeat must be at least 1")
    if args.plot or args.load or args.placement == "all":
        raise StepperError("--trace takes --hits, --repeat, --placement same|free|split, "
                           "--rows and --json")
    only = check_rows(args.rows)
    if args.json:
        check_writable(args.json)
    report = run_trace_bench(calls, args.repeat, args.placement or "same", only,
                             progress=lambda line: print(line, file=sys.stderr, flush=True))
    if args.json:
        write_json(args.json, report)
    print(trace_table(report))
    return 0


def _check_plot_possible(path: str) -> None:
    """Fail before a minute of measuring, not after it."""
    from importlib.util import find_spec

    from ..errors import StepperError

    if not path.endswith(".png"):
        raise StepperError(f"--plot {path}: the chart is a PNG; name the file FILE.png")
    if find_spec("matplotlib") is None:
        raise StepperError("--plot needs matplotlib: pip install -e .[bench]")
