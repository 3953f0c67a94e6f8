"""What a process has mapped: its ELF objects with their load biases (/proc/PID/maps read
with stepper.maps, each file with stepper.symbols), and the dynamic loader's rendezvous
(r_debug), which says when that set changes.

A module of its own because it is about one process, not one file: the file readers below it
never need a pid.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Iterable

from . import maps
from .elf import is_elf
from .errors import StepperError
from .symbols import ElfFileError, ElfSymbols

__all__ = ["LoadedObject", "loaded_objects", "r_debug_breakpoint", "r_debug_address",
           "r_debug_state", "RT_CONSISTENT", "RT_ADD", "RT_DELETE"]


# -- processes: what is mapped where ----------------------------------------------------------

@dataclass(frozen=True)
class LoadedObject:
    """An ELF file mapped into a process, and its load bias (runtime = bias + link-time)."""

    path: str
    bias: int = 0
    start: int = 0
    end: int = 0
    main: bool = False

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @property
    def symbols(self) -> ElfSymbols:
        return ElfSymbols.load(self.path)

    def names(self) -> set[str]:
        """What an `OBJECT:` qualifier may call it: the file name and its DT_SONAME."""
        names = {self.name}
        try:
            soname = self.symbols.soname
        except StepperError:
            soname = None
        if soname:
            names.add(soname)
        return names

    def same_file(self, path: str) -> bool:
        """Whether `path` is this object's file (by inode, so /lib and /usr/lib agree)."""
        try:
            return os.path.samefile(self.path, path)
        except OSError:
            return os.path.realpath(self.path) == os.path.realpath(path)


def _file_mappings(pid: int) -> list[maps.Mapping]:
    """The mappings of files (absolute paths) in process `pid`; StepperError when unreadable."""
    try:
        mappings = maps.read(pid)
    except OSError as e:
        raise StepperError(f"cannot read /proc/{pid}/maps: {e.strerror}") from None
    return [m for m in mappings if m.is_file]


def loaded_objects(pid: int) -> list[LoadedObject]:
    """The ELF files process `pid` has mapped, main executable first, then by address.

    The bias of each comes from its lowest mapping (see ElfSymbols.bias_for_mapping); files
    that are deleted or unreadable, and non-ELF mappings (locale archives, fonts), are left out.
    """
    try:
        exe = os.path.realpath(f"/proc/{pid}/exe")
    except OSError:
        exe = ""
    by_path: dict[str, list[maps.Mapping]] = {}
    for mapping in _file_mappings(pid):
        if not mapping.path.endswith(" (deleted)"):
            by_path.setdefault(mapping.path, []).append(mapping)
    objects = []
    for path, mappings in by_path.items():
        if not is_elf(path):
            continue
        try:
            symbols = ElfSymbols.load(path)
        except ElfFileError:
            continue
        first = min(mappings, key=lambda m: m.start)
        bias = symbols.bias_for_mapping(first.start, first.offset)
        is_main = os.path.realpath(path) == exe
        objects.append(LoadedObject(path=path, bias=bias, start=first.start,
                                    end=max(m.end for m in mappings), main=is_main))
    objects.sort(key=lambda o: (not o.main, o.start))
    return objects


# -- the dynamic loader's rendezvous ----------------------------------------------------------

RT_CONSISTENT, RT_ADD, RT_DELETE = 0, 1, 2
R_DEBUG_STATE_OFFSET = 24   # struct r_debug: int r_version; link_map *r_map; r_brk; r_state


def _loader(objects: Iterable[LoadedObject]) -> tuple[LoadedObject, ElfSymbols] | None:
    for obj in objects:
        try:
            symbols = obj.symbols
        except StepperError:
            continue
        if symbols.lookup("_dl_debug_state") and symbols.variable("_r_debug") is not None:
            return obj, symbols
    return None


def r_debug_breakpoint(objects: Iterable[LoadedObject]) -> int | None:
    """Runtime address of `_dl_debug_state` in the mapped dynamic loader, or None.

    glibc's loader calls this empty function (r_debug.r_brk) before and after it changes the
    set of loaded objects; a breakpoint there is how a debugger learns about new libraries.
    It is mapped at the exec stop already, so the engine can insert it before any library.
    """
    found = _loader(objects)
    if found is None:
        return None
    obj, symbols = found
    return obj.bias + symbols.lookup("_dl_debug_state")[0].value


def r_debug_address(objects: Iterable[LoadedObject]) -> int | None:
    """Runtime address of the loader's `_r_debug` (struct r_debug), or None."""
    found = _loader(objects)
    if found is None:
        return None
    obj, symbols = found
    return obj.bias + (symbols.variable("_r_debug") or 0)


def r_debug_state(read: Callable[[int, int], bytes], objects: Iterable[LoadedObject]) -> int | None:
    """r_debug.r_state read through `read(address, size)` (e.g. a ptrace peek): RT_CONSISTENT
    once the link map is complete, which is when new objects can be resolved against."""
    address = r_debug_address(objects)
    if address is None:
        return None
    return int.from_bytes(read(address + R_DEBUG_STATE_OFFSET, 4), "little")
