"""The files a command writes (`--json`, `--plot`): one set of rules for every command.

A path is checked before the work starts, because a run can be a minute of measuring, a
million fuzz cases or a whole traced program, and a typo in the output path must not throw
that away. `-` means standard output. A failure is a one-line StepperError naming the path.

A report can hold the program's data (arguments, strings it handled, stack words), so a file
stepper creates is created 0600 (less if the umask says so); a file that already exists keeps
its mode. And as the output path is often in a shared directory such as /tmp, where another
user can plant a symlink to a file of the victim's, the last component is followed only where
the kernel's protected_symlinks rule would follow it (a symlink in a sticky world-writable
directory only if its owner is the user or the directory's owner), whatever that sysctl is set
to; `/dev/stdout` and the like are followed as always.
"""

from __future__ import annotations

import json
import os
import stat
import sys

from .errors import StepperError

#: The version of every JSON stepper writes (docs/schema.md): keys are only ever added.
SCHEMA = 1
#: The mode a new report file is created with (before the umask).
MODE = 0o600


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
    _symlink_allowed(path)


def _symlink_allowed(path: str) -> bool:
    """Whether `path` is a symlink (to be followed); a StepperError if the protected_symlinks
    rule forbids following it (see the module doc)."""
    try:
        link = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as e:
        raise StepperError(f"cannot write {path}: {e.strerror}") from None
    if not stat.S_ISLNK(link.st_mode):
        return False
    folder = os.stat(os.path.dirname(os.path.abspath(path)))
    shared = folder.st_mode & stat.S_ISVTX and folder.st_mode & stat.S_IWOTH
    if shared and link.st_uid not in (os.geteuid(), folder.st_uid):
        raise StepperError(f"cannot write {path}: it is a symlink owned by uid {link.st_uid} in a "
                           f"sticky world-writable directory (someone else may have planted it); "
                           f"remove it or write elsewhere")
    return True


class Output:
    """A report destination opened early (so the path is proven before the work starts);
    `write_text`/`write_json` replace its contents when the report is ready."""

    def __init__(self, path: str, fd: int | None) -> None:
        self.path, self.fd = path, fd

    def write_text(self, text: str) -> None:
        if self.fd is None:
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        try:
            if stat.S_ISREG(os.fstat(self.fd).st_mode):
                os.ftruncate(self.fd, 0)
                os.lseek(self.fd, 0, os.SEEK_SET)
            data = text.encode()
            while data:
                data = data[os.write(self.fd, data):]
        except OSError as e:
            raise StepperError(f"cannot write {self.path}: {e.strerror}") from None

    def write_json(self, data) -> None:
        """`data` as indented JSON."""
        self.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> Output:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_output(path: str) -> Output:
    """Open (creating it 0600 if new, see the module doc) the report file `path` now, or
    standard output for `-`; a one-line StepperError if it cannot be written. Nothing is
    truncated until the report is written."""
    if path == "-":
        return Output(path, None)
    check_writable(path)
    follow = _symlink_allowed(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        return Output(path, os.open(path, flags, MODE))
    except OSError as e:
        raise StepperError(f"cannot write {path}: {e.strerror}") from None


def write_json(path: str, data) -> None:
    """`data` as indented JSON to file `path`, or to stdout for `-`."""
    with open_output(path) as out:
        out.write_json(data)


def claim(path: str) -> None:
    """Create `path` (empty, 0600, if it does not exist; an existing file is left as it is)
    under open_output's rules and make sure the kernel accepts writes to it, or raise: called
    just before a program starts, so that a report that could not be written never costs the
    program's run (its exit status would be lost). A zero-length write is refused by files
    that take no writes at all (/proc/version) and changes nothing in the others."""
    if path == "-":
        return
    with open_output(path) as out:
        try:
            if out.fd is not None:
                os.write(out.fd, b"")
        except OSError as e:
            raise StepperError(f"cannot write {path}: {e.strerror}") from None
