"""Subcommands of `stepper`: one module each, exposing `register(subparsers)`; the parser
built there sets `run=callable(args) -> exit status` with `set_defaults`."""
