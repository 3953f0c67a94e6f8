"""`stepper corpus build|coverage`: harvest probe-site corpora from ELF files and report
what share of their sites stepper emulates, executes out of line, or refuses."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import corpus, coverage
from ..output import SCHEMA, check_writable, write_json
from . import SUMMARIES

#: The corpora committed with the project, used when `coverage` is given no input.
COMMITTED = Path(__file__).resolve().parents[2] / "corpus"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "corpus", help=SUMMARIES["corpus"],
        description="Harvest probe sites (function entries and a seeded sample of all "
                    "instructions) from ELF files, and report how many stepper emulates.")
    sub = parser.add_subparsers(dest="corpus_command", metavar="ACTION", required=True)

    build = sub.add_parser("build", help="harvest ELF files into a corpus (.jsonl.gz)")
    build.add_argument("binaries", nargs="+", metavar="BINARY", help="x86-64 ELF files")
    build.add_argument("-o", "--output", required=True, metavar="FILE",
                       help="corpus to write, e.g. corpus/NAME.jsonl.gz")
    _harvest_options(build)
    build.set_defaults(run=run_build)

    report = sub.add_parser(
        "coverage", help="share of sites emulated / executed out of line / refused",
        description="Coverage of corpora or of ELF files harvested on the fly. With no input, "
                    f"the committed corpora ({COMMITTED}/*.jsonl.gz).")
    report.add_argument("inputs", nargs="*", metavar="CORPUS_OR_BINARY",
                        help="corpus files (.jsonl.gz) or ELF files to harvest on the fly")
    report.add_argument("--json", metavar="FILE", help="also write the totals as JSON "
                        "(counts by occurrence); '-' for stdout")
    report.add_argument("--top", type=int, default=15, metavar="N",
                        help="missing mnemonics to list in the table (default 15)")
    _harvest_options(report)
    report.set_defaults(run=run_coverage)


def _harvest_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sample", type=int, default=corpus.DEFAULT_SAMPLE, metavar="N",
                        help="instructions of .text to sample per binary "
                             f"(default {corpus.DEFAULT_SAMPLE})")
    parser.add_argument("--seed", type=int, default=corpus.DEFAULT_SEED, metavar="S",
                        help=f"seed of the sample (default {corpus.DEFAULT_SEED})")
    parser.add_argument("--eh-frame", action="store_true",
                        help="also take function starts from .eh_frame (stripped executables)")


def run_build(args: argparse.Namespace) -> int:
    output = Path(args.output)
    if not output.parent.is_dir():
        raise corpus.CorpusError(f"{output}: directory {str(output.parent)!r} does not exist")
    rows = corpus.build(args.binaries, sample=args.sample, seed=args.seed,
                        eh_frame=args.eh_frame)
    corpus.write(rows, output)
    counts = {kind: sum(r["count"] for r in rows if r["kind"] == kind) for kind in corpus.KINDS}
    print(f"{output}: {len(rows)} unique encodings from {len(args.binaries)} file(s): "
          f"{counts['entry']} entry sites, {counts['sample']} sampled sites")
    return 0


def run_coverage(args: argparse.Namespace) -> int:
    if args.top < 0:
        raise corpus.CorpusError(f"--top must be >= 0, not {args.top}")
    inputs = [Path(p) for p in args.inputs] or sorted(COMMITTED.glob("*.jsonl.gz"))
    if not inputs:
        raise corpus.CorpusError(f"no input given and no corpus in {COMMITTED}")
    if args.json:
        check_writable(args.json)
    results = []
    for path in inputs:  # load everything first: a bad input fails before any output
        rows = corpus.load(path, sample=args.sample, seed=args.seed, eh_frame=args.eh_frame)
        results.append((path.name, coverage.coverage(rows)))
    total = coverage.Coverage()
    for _, result in results:
        total.merge(result)
    print(coverage.format_table(results, total if len(results) > 1 else None, top=args.top))
    if args.json:
        write_json(args.json, {"schema": SCHEMA, **total.as_json()})
    return 0
