"""The files a command writes (`--json`, `--plot`): one set of rules for every command.

A path is checked before the work starts, because a run can be a minute of measuring, a
million fuzz cases or a whole traced program, and a typo in the output path must not throw
that away. `-` means standard output. A failure is a one-line StepperError naming the path.
"""

from __future__ import annotations

import json
import os
import sys

from .errors import StepperError


def check_writable(path: str) -> None:
    """Refuse `path` now, creating nothing, if it cannot be written later."""
    if path == "-":
        return
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise StepperError(f"cannot write {path}: it is a directory")
    if not os.path.isdir(folder):
        raise StepperError(f"cannot write {path}: directory {folder!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise StepperError(f"cannot write {path}: directory {folder!r} is not writable")


def write_json(path: str, data) -> None:
    """`data` as indented JSON to file `path`, or to stdout for `-`."""
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if path == "-":
        sys.stdout.write(text)
        return
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as e:
        raise StepperError(f"cannot write {path}: {e.strerror}") from None


def claim(path: str) -> None:
    """Create `path` (empty, 0600, if it does not exist; an existing file is left as it is)
    and make sure the kernel accepts writes to it, or raise: called just before a program
    starts, so that a report that could not be written never costs the program's run (its
    exit status would be lost). A zero-length write is refused by files that take no
    writes at all (/proc/version) and changes nothing in the others."""
    if path == "-":
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"")
        finally:
            os.close(fd)
    except OSError as e:
        raise StepperError(f"cannot write {path}: {e.strerror}") from None
