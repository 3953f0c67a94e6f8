"""Which ELF file the kernel runs for a program file: itself, or the interpreter of a script.

The kernel's binfmt_script: a file starting with `#!` runs `INTERPRETER [ARG] FILE [ARGS...]`,
where INTERPRETER is the first word after `#!` (spaces and tabs skipped, the line cut at
BINPRM_BUF_SIZE, 256 bytes) taken as a path (never searched in PATH), and the interpreter may
itself be a script, up to a few levels (the kernel allows 4 nested interpreters, then fails
with ELOOP). stepper probe resolves specs against that ELF file before the program starts (the
running process's main executable is the interpreter) but starts the script itself, as a shell
would, so the program sees its own argv.
"""

from __future__ import annotations

import os

from .errors import StepperError

BINPRM_BUF_SIZE = 256
MAX_NESTING = 4


def executable_image(path: str) -> str:
    """The real path of the ELF file the kernel loads to run `path` (a script's interpreter,
    followed through nested scripts); a one-line StepperError where the kernel would fail."""
    seen = path
    for _ in range(MAX_NESTING + 1):
        try:
            with open(path, "rb") as f:
                head = f.read(BINPRM_BUF_SIZE)
        except OSError as e:
            raise StepperError(f"cannot run {seen}: {path}: {e.strerror}") from None
        if not head.startswith(b"#!"):
            return os.path.realpath(path)
        line = head[2:].split(b"\n", 1)[0].strip(b" \t")
        interpreter = line.split(None, 1)[0] if line else b""
        if not interpreter:
            raise StepperError(f"cannot run {seen}: its #! line names no interpreter")
        path = os.fsdecode(interpreter)
        if not os.path.isfile(path):
            raise StepperError(f"cannot run {seen}: its interpreter {path} does not exist")
        if not os.access(path, os.X_OK):
            raise StepperError(f"cannot run {seen}: its interpreter {path} is not executable")
    raise StepperError(f"cannot run {seen}: more than {MAX_NESTING} nested #! interpreters")
