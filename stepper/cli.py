"""The `stepper` command. Each subcommand lives in its own module under stepper/commands/
and registers itself with `register(subparsers)`; this file only finds and runs them."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from . import commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stepper",
        description="Step over breakpoints in traced processes by emulating the displaced instruction.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run a subcommand; its return value is the exit status.

    Errors a user can act on (subclasses of stepper.errors.StepperError, emu.EmuError) print
    one line on stderr and exit 2, never a traceback.
    """
    from emu import EmuError

    from .errors import StepperError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (StepperError, EmuError) as e:
        print(f"stepper: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
