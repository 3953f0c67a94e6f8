"""The `stepper` command. Each subcommand lives in its own module under stepper/commands/
and registers itself with `register(subparsers)`; this file only finds and runs them.

Only the module of the command being run is imported: the others appear in `stepper --help`
through their one-line summary (stepper.commands.SUMMARIES), so that the help and `--version`
do not wait for the emulator, Unicorn, hypothesis and the bench harness to load.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .commands import SUMMARIES


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with the full options of `command` (every command's, when None); the
    other commands get a placeholder that only carries their summary."""
    parser = argparse.ArgumentParser(
        prog="stepper",
        description="Step over breakpoints in traced processes by emulating the displaced instruction.")
    parser.add_argument("--version", action=_Version, nargs=0,
                        help="print stepper's version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in sorted(SUMMARIES):
        if command is None or name == command:
            importlib.import_module(f"{__package__}.commands.{name}").register(sub)
        else:
            sub.add_parser(name, help=SUMMARIES[name], add_help=False)
    return parser


class _Version(argparse.Action):
    """`--version`: the installed package's version, looked up only when asked for."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = version("stepper")
        except PackageNotFoundError:  # a source tree that was never installed
            text = "unknown (not installed)"
        print(f"stepper {text}")
        parser.exit()


def _command_in(argv: list[str]) -> str:
    """The command named in `argv` (its first word that is not an option), or ""."""
    return next((word for word in argv if not word.startswith("-")), "")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run a subcommand; its return value is the exit status.

    Errors a user can act on (subclasses of stepper.errors.StepperError, emu.EmuError) print
    one line on stderr and exit 2, never a traceback.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _command_in(argv)
    parser = build_parser(command if command in SUMMARIES else "")
    args = parser.parse_args(argv)

    from emu import EmuError

    from .errors import StepperError

    try:
        return int(args.run(args) or 0)
    except (StepperError, EmuError) as e:
        print(f"stepper: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
