"""`stepper probe`: run a program with breakpoints at addresses of its executable, count hits.

    stepper probe [--mode auto|emulate|xol|reinsert] [--json FILE] [--quiet] \\
                  -p 0xADDRESS [-p ...] -- PROGRAM [ARGS...]

Addresses are as `nm` prints them for the main executable; the load bias is added for PIE.
The program's stdin/stdout/stderr are its own; stepper writes only to stderr, and ends the way
the program did (same exit code, or killed by the same signal, as strace does).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys

from .. import api
from ..errors import StepperError
from ..strategies import MODES


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "probe", help="run a program with breakpoints stepped over by emulation",
        description="Run PROGRAM with breakpoints at addresses of its executable (as nm prints "
                    "them) and report the hits. Exits as the program did.")
    p.add_argument("--mode", choices=MODES, default="auto",
                   help="step strategy for every probe (default: auto)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE")
    p.add_argument("--quiet", action="store_true", help="print no table at exit")
    p.add_argument("-p", "--probe", dest="probes", action="append", nargs="+", required=True,
                   metavar="0xADDRESS", help="address(es) in the main executable, as nm prints "
                                             "them (repeatable)")
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


def run(args) -> int:
    argv = list(args.program)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise StepperError("no program given: stepper probe -p 0xADDRESS -- PROGRAM [ARGS...]")
    specs = [spec for group in args.probes for spec in group]
    addresses = [parse_address(spec) for spec in specs]  # before anything starts
    proc = api.spawn(argv, args.mode)
    probes = []
    try:
        bias = proc.load_bias
        for spec, address in zip(specs, addresses):
            probes.append((spec, proc.break_at(address + bias)))
    except BaseException:
        proc.kill()
        raise
    status = proc.run()
    report = build_report(proc, probes, status)
    if not args.quiet:
        print_table(report)
    if args.json:
        write_json(args.json, report)
    return end_like(status)


def build_report(proc: api.Process, probes, status: api.ExitStatus) -> dict:
    rows = []
    totals = {"emulate": 0, "xol": 0, "reinsert": 0, "fallback": 0}
    for spec, bp in probes:
        rows.append({
            "spec": spec,
            "object": os.path.basename(bp.symbol.object) if bp.symbol else
            os.path.basename(proc.exe),
            "symbol": bp.symbol.name if bp.symbol else None,
            "address": f"{bp.address:#x}",
            "instruction": bp.insn.text,
            "strategy": bp.strategy,
            "hits": bp.stats.hits,
        })
        for key, value in bp.stats.steps.items():
            totals[key] += value
        totals["fallback"] += sum(bp.stats.fallbacks.values())
    return {"exit_code": status.exit_code, "signal": status.signal, "probes": rows,
            "steps": totals, "threads": proc.threads_seen, "wall_s": round(proc.wall_s, 6)}


def print_table(report: dict) -> None:
    out = sys.stderr
    header = ("spec", "address", "instruction", "strategy", "hits")
    rows = [header] + [tuple(str(p[k]) for k in header) for p in report["probes"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip(), file=out)
    steps = report["steps"]
    print("steps: " + ", ".join(f"{k} {v}" for k, v in steps.items())
          + f"; threads {report['threads']}; {report['wall_s']:.3f} s", file=out)
    if report["signal"] is not None:
        print(f"program killed by {signal.Signals(report['signal']).name}", file=out)
    else:
        print(f"program exited with {report['exit_code']}", file=out)


def write_json(path: str, report: dict) -> None:
    try:
        with open(path, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    except OSError as e:
        raise StepperError(f"cannot write {path}: {e.strerror}") from None


def end_like(status: api.ExitStatus) -> int:
    """Exit code to return, or die of the program's signal (without a core file)."""
    if status.signal is None:
        return status.exit_code or 0
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError):
        pass
    signal.signal(status.signal, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [status.signal])
    os.kill(os.getpid(), status.signal)
    return 128 + status.signal
