"""`stepper fuzz`: differential fuzzing of the emulator against Unicorn and/or the real CPU."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..output import SCHEMA, check_writable, write_json
from . import SUMMARIES

#: corpus/regressions of the repository (stepper.fuzz.regressions.DEFAULT_DIR); the fuzz
#: package is imported only when the command runs: it needs the `fuzz` extra.
_REGRESSIONS = Path(__file__).resolve().parents[2] / "corpus" / "regressions"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "fuzz", help=SUMMARIES["fuzz"],
        description="Run instructions with random register and memory states through the "
                    "emulator and an oracle (Unicorn, the real CPU, or both) and report every "
                    "difference. Divergences are shrunk and written to corpus/regressions/.")
    parser.add_argument("--cases", type=int, default=10_000, metavar="N",
                        help="number of cases (default 10000)")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="seed: case i depends only on (S, i) (default 0)")
    parser.add_argument("--oracle", choices=("unicorn", "native", "both"), default="unicorn",
                        help="what the emulator is compared with (default unicorn)")
    parser.add_argument("--from-corpus", metavar="PATH",
                        help="fuzz every emulatable encoding of this corpus (.jsonl.gz) in turn "
                             "instead of the test suite's generator")
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON ('-': stdout)")
    parser.add_argument("--workers", type=int, default=0, metavar="N",
                        help="worker processes (default 0: every core)")
    parser.add_argument("--cluster", metavar="ADDRESS",
                        help="run on a Dask distributed scheduler (tls://HOST:PORT) instead; "
                             "pickles travel both ways, so both ends must trust each other")
    parser.add_argument("--tls-ca-file", metavar="FILE",
                        help="the CA certificate that signed the cluster's certificates")
    parser.add_argument("--tls-cert", metavar="FILE", help="this client's certificate (PEM)")
    parser.add_argument("--tls-key", metavar="FILE", help="this client's private key (PEM)")
    parser.add_argument("--insecure", action="store_true",
                        help="allow a plain tcp:// cluster address (anyone who can reach it "
                             "can run code on either side)")
    parser.add_argument("--regressions", metavar="DIR", default=str(_REGRESSIONS),
                        help="where shrunk divergences are written (default corpus/regressions)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..fuzz import runner  # StepperError naming the extra when it is not installed
    from ..fuzz.cluster import Trust

    if args.json:
        check_writable(args.json)
    config = runner.Config(cases=args.cases, seed=args.seed, oracle=args.oracle,
                           corpus=args.from_corpus, workers=args.workers, cluster=args.cluster,
                           trust=Trust(args.tls_ca_file, args.tls_cert, args.tls_key,
                                       args.insecure),
                           regressions_dir=Path(args.regressions), progress=sys.stderr.isatty())
    try:
        report = runner.run(config)
    finally:
        runner.close_oracles()
    out = sys.stderr if args.json == "-" else sys.stdout  # keep stdout pure JSON then
    print(f"{report.cases} cases against {report.oracle} (seed {report.seed}, {report.source}): "
          f"{report.divergences} divergences, {report.unsupported} unsupported, "
          f"{report.skipped} skipped, {report.cases_per_s:,.0f} cases/s "
          f"({report.seconds:.1f} s, workers: {report.workers})", file=out)
    for kind in report.kinds:
        print(f"  {kind['count']:8} x {kind['oracle']:7} {kind['mnemonic']:10} "
              f"{', '.join(kind['signature'])} (first: case {kind['first_index']})", file=out)
    for path in report.regressions:
        print(f"  wrote {path}", file=out)
    if args.json:
        write_json(args.json, {"schema": SCHEMA, **report.as_json()})
    return 1 if report.divergences else 0
