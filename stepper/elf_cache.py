"""What stepper parses from ELF files (headers, function symbols, imports, data symbols, line
tables), kept on disk between runs: parsing libc's symbol table costs about a second at every
start, reading it back as JSON a few milliseconds.

An entry is keyed by what identifies the bytes it came from: the file's build-id, real path,
size and mtime, and the same for the separate debug file the symbols were read from (a
stripped file and its debug file share a build-id, so the build-id alone would not do). A
changed file gets a new key; stale entries are never read. The headers (which hold the
build-id) are keyed by the file alone: path, size, mtime, device, inode and ctime.

Entries live in `<cache dir>/elf/` (stepper.toolchain: the directory is checked like the build
cache, each file is opened with `open_verified`), are written to a temporary and renamed into
place (a reader never sees half an entry), and are validated when read: an entry that does not
parse as what `check` expects is parsed again from the ELF file and rewritten, never trusted.
When the cache directory cannot be used (unsafe, read-only), stepper parses as it did without
a cache; the cache only ever saves time. STEPPER_ELF_CACHE=0 turns it off.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from . import toolchain

__all__ = ["cached", "file_identity", "file_stamp", "enabled"]

#: Bump when what an entry holds, or how it is computed, changes.
FORMAT = 2


def enabled() -> bool:
    return os.environ.get("STEPPER_ELF_CACHE", "1") != "0"


def file_identity(path: str | None) -> list:
    """[real path, size, mtime in ns] of `path` (None for no file), for a cache key."""
    if path is None:
        return []
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        return [real]
    return [real, st.st_size, st.st_mtime_ns]


def file_stamp(path: str) -> list:
    """`file_identity` plus the device, inode and change time (ctime, which no one can set
    back): the key of what is parsed from a file that has no build-id to back it up (the
    ELF headers, which hold the build-id)."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        return [real]
    return [real, st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino, st.st_ctime_ns]


def _directory() -> Path | None:
    try:
        base = toolchain.cache_dir()
        folder = base / "elf"
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            pass
        return toolchain.check_dir(folder)
    except (toolchain.CacheError, OSError):
        return None


def _entry(kind: str, key: list) -> Path | None:
    folder = _directory()
    if folder is None:
        return None
    digest = hashlib.sha256(json.dumps([FORMAT, kind, key]).encode()).hexdigest()[:32]
    return folder / f"{kind}-{digest}.json"


def _read(path: Path) -> Any:
    try:
        fd = toolchain.open_verified(path, missing_ok=True)
    except toolchain.CacheError:
        return None          # refused (someone else's file, a symlink): parse instead
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as stream:
        return json.loads(stream.read().decode())


def _write(path: Path, value: Any) -> None:
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    except OSError:
        return
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(value, stream, separators=(",", ":"))
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass


def cached(kind: str, key: list, compute: Callable[[], Any],
           check: Callable[[Any], bool]) -> Any:
    """The JSON value `compute()` returned for `kind` and `key`, read back from the cache when
    an entry exists and `check(value)` accepts it; else computed now and stored."""
    if not enabled():
        return compute()
    path = _entry(kind, key)
    if path is None:
        return compute()
    try:
        value = _read(path)
    except (OSError, ValueError, UnicodeDecodeError):
        value = None
    try:
        if value is not None and check(value):
            return value
    except (TypeError, ValueError, KeyError, IndexError, AttributeError):
        pass
    value = compute()
    _write(path, value)
    return value
