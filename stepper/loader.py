"""The dynamic loader's search, emulated: which files a program will load at start-up, and
where a library name leads, found the way ld.so finds them (DT_RPATH, LD_LIBRARY_PATH,
DT_RUNPATH, the ldconfig cache, the default directories).

Why emulate it: probe specs are checked against those files before the program runs, so every
error comes out while nothing has started (stepper.specs.resolve_static).
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import shutil
import subprocess
from typing import Iterable

from .elf import is_elf
from .errors import StepperError
from .symbols import ElfFileError, ElfSymbols

__all__ = ["library_closure", "find_library", "find_on_disk", "file_matches", "LoaderError",
           "DEFAULT_LIBRARY_DIRS"]

GLOB_CHARS = "*?["
DEFAULT_LIBRARY_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64",
                        "/usr/lib64", "/lib", "/usr/lib")


class LoaderError(StepperError):
    """The executable to search from does not exist."""


def library_closure(executable_path: str) -> list[str]:
    """The executable, then every library it loads at startup, breadth-first like the loader
    (DT_NEEDED found via DT_RPATH, LD_LIBRARY_PATH, DT_RUNPATH, the ldconfig cache and the
    default directories), then its interpreter. Paths are real paths; missing libraries are
    left out (the loader itself will report them when the program starts).
    """
    if not os.path.isfile(executable_path):
        raise LoaderError(f"no such executable: {executable_path}")
    first = os.path.realpath(executable_path)
    order = [first]
    queue = [first]
    while queue:
        path = queue.pop(0)
        symbols = ElfSymbols.load(path)
        for needed in symbols.needed:
            found = find_library(needed, symbols, path)
            if found is not None and os.path.realpath(found) not in order:
                order.append(os.path.realpath(found))
                queue.append(os.path.realpath(found))
    interpreter = ElfSymbols.load(first).interpreter
    if interpreter and os.path.isfile(interpreter):
        real = os.path.realpath(interpreter)
        if real not in order:
            order.append(real)
    return order


def find_library(name: str, requester: ElfSymbols, requester_path: str) -> str | None:
    """Where the dynamic loader would find library `name` for `requester`, or None."""
    if "/" in name:
        return name if os.path.isfile(name) else None
    origin = os.path.dirname(os.path.realpath(requester_path))

    def expand(dirs: Iterable[str]) -> list[str]:
        return [d.replace("$ORIGIN", origin).replace("${ORIGIN}", origin) for d in dirs]

    search: list[str] = []
    if not requester.runpath:
        search += expand(requester.rpath)
    search += [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    search += expand(requester.runpath)
    for directory in search:
        candidate = os.path.join(directory, name)
        if is_elf(candidate, x86_64=True):
            return candidate
    cached = _ldconfig_cache().get(name)
    if cached and os.path.isfile(cached):
        return cached
    for directory in DEFAULT_LIBRARY_DIRS:
        candidate = os.path.join(directory, name)
        if is_elf(candidate, x86_64=True):
            return candidate
    return None


@functools.lru_cache(maxsize=1)
def _ldconfig_cache() -> dict[str, str]:
    """name -> path of the x86-64 entries of `ldconfig -p` (the loader's own cache)."""
    ldconfig = shutil.which("ldconfig") or next(
        (p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig") if os.path.exists(p)), None)
    if ldconfig is None:
        return {}
    try:
        output = subprocess.run([ldconfig, "-p"], capture_output=True, text=True,
                                timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    cache: dict[str, str] = {}
    for line in output.splitlines():
        match = re.match(r"\s+(\S+) \(([^)]*)\) => (\S+)", line)
        if match and "x86-64" in match.group(2):
            cache.setdefault(match.group(1), match.group(3))
    return cache


def find_on_disk(qualifier: str, executable: str) -> str | None:
    if "/" in qualifier:
        return qualifier if os.path.isfile(qualifier) else None
    if any(c in qualifier for c in GLOB_CHARS):
        return None
    return find_library(qualifier, ElfSymbols.load(executable), executable)


def file_matches(qualifier: str, path: str) -> bool:
    if "/" in qualifier:
        try:
            return os.path.samefile(qualifier, path)
        except OSError:
            return False
    names = {os.path.basename(path)}
    try:
        soname = ElfSymbols.load(path).soname
    except ElfFileError:
        soname = None
    if soname:
        names.add(soname)
    if any(c in qualifier for c in GLOB_CHARS):
        return any(fnmatch.fnmatchcase(n, qualifier) for n in names)
    return qualifier in names
