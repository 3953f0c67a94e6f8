"""`stepper demo` (what `make demo` runs): build the bundled demo program and probe every one
of its functions with `stepper probe`, printing the hit table.

The demo's functions have call counts that can be checked by reading stepper/data/demo.c
(deposit and withdraw 40 times, fee 40, checksum 4, main once...), so the table shows at a
glance that every call was seen while the program printed exactly what it prints unprobed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from .. import toolchain
from ..policy import MODES
from ..symbols import ElfSymbols
from . import SUMMARIES

DEMO_SOURCE = "demo.c"
DEMO_FLAGS = ("-O0", "-fno-inline", "-g")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help=SUMMARIES["demo"],
        description="Build the bundled demo program with gcc (once, into the cache directory) "
                    "and run `stepper probe` on it with every one of its functions probed.")
    p.add_argument("--mode", default="auto", choices=MODES,
                   help="step strategy (default: auto)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    p.set_defaults(run=run)


def demo_functions(exe: str) -> list[str]:
    """The functions defined in demo.c, in address order: those whose first address the DWARF
    line table attributes to the demo's source (the C runtime's helpers have no such row)."""
    symbols = ElfSymbols.load(exe)
    starts: set[int] = set()
    for path in symbols.source_files():
        if path.endswith(".c"):
            for line in symbols.lines_with_code(path):
                for addresses in symbols.lines(path, line).values():
                    starts.update(addresses)
    names = []
    for symbol in symbols.functions():
        if symbol.value in starts and symbol.name not in names:
            names.append(symbol.name)
    return names


def demo_program() -> str:
    """The built demo, whose file is called `demo` (the table's object column shows the file
    name; the cache's directory name carries a hash of source and flags). The path returned
    executes the checked cache file through a descriptor (see stepper.toolchain)."""
    return str(toolchain.build(DEMO_SOURCE, DEMO_FLAGS, filename="demo"))


def run(args) -> int:
    from . import probe

    exe = demo_program()
    argv = ["probe", "--mode", args.mode]
    for name in demo_functions(exe):
        argv += ["-p", name]
    if args.json:
        argv += ["--json", args.json]
    # Shown with the cache file's name (a command the user can rerun); run through the checked
    # descriptor, which is that same file.
    shown = [*argv, "--", os.path.realpath(exe)]
    print("$ stepper " + shlex.join(shown), file=sys.stderr, flush=True)
    parser = argparse.ArgumentParser(prog="stepper")
    probe.register(parser.add_subparsers())
    probe_args = parser.parse_args([*argv, "--", exe])  # the command printed above
    return probe_args.run(probe_args)
