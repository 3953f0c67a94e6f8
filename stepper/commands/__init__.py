"""Subcommands of `stepper`: one module each, exposing `register(subparsers)`; the parser
built there sets `run=callable(args) -> exit status` with `set_defaults`.

SUMMARIES is the one-line help of each command, kept here so that `stepper --help` lists the
commands without importing them: their modules import the emulator, the fuzzers (Unicorn,
hypothesis) and the bench harness, which take far longer to load than the help takes to print.
A command's module is imported only when that command runs.
"""

SUMMARIES = {
    "bench": "measure µs per breakpoint hit for each strategy and its peers",
    "corpus": "harvest probe-site corpora and report emulation coverage",
    "demo": "probe every function of a small bundled program (what `make demo` runs)",
    "list": "list the functions, lines, variables or USDT probes of a file (what to probe)",
    "fuzz": "differential fuzzing of the emulator against Unicorn and the real CPU",
    "probe": "run a program with breakpoints stepped over by emulation",
}
