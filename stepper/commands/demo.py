"""`stepper demo` (what `make demo` runs): build the bundled demo program and probe every one
of its functions with `stepper probe`, printing the hit table.

The demo's functions have call counts that can be checked by reading stepper/data/demo.c
(deposit and withdraw 40 times, fee 40, checksum 4, main once...), so the table shows at a
glance that every call was seen while the program printed exactly what it prints unprobed.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

from .. import toolchain
from ..strategies import MODES
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
    """The built demo, as a file called `demo` (the table's object column shows the file
    name; the cache's name carries a hash of source and flags), in a directory of its own."""
    built = toolchain.build(DEMO_SOURCE, DEMO_FLAGS)
    target = Path(f"{built}.d") / "demo"
    if not target.exists():
        target.parent.mkdir(exist_ok=True)
        tmp = target.with_name(f"demo.{os.getpid()}.tmp")
        shutil.copy2(built, tmp)
        tmp.rename(target)   # atomic: a concurrent demo never runs a half-copied file
    return str(target)


def run(args) -> int:
    from ..cli import main

    exe = demo_program()
    argv = ["probe", "--mode", args.mode]
    for name in demo_functions(exe):
        argv += ["-p", name]
    if args.json:
        argv += ["--json", args.json]
    argv += ["--", exe]
    print("$ stepper " + shlex.join(argv), file=sys.stderr, flush=True)
    return main(argv)
