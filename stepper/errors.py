"""Errors of the stepper package: each carries a one-line message a user can act on."""


class StepperError(Exception):
    """Base class: the CLI prints these as one line, never as a traceback."""
