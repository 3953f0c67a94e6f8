"""The code objects an unwinder walks through: the mapped ELF files and the vDSO.

Why a module: the unwinder needs, for any pc, the object that holds it, its load bias, its
call-frame information and a name for the pc. The mapped files come from
stepper.loaded.loaded_objects (path, bias, extent) and are named with their symbol tables;
the vDSO has no file, so its image is read from the process memory at its `[vdso]` mapping
(the kernel maps a complete ELF image there, section headers included) and both its CFI and
its `.dynsym` are read from that copy.
"""

from __future__ import annotations

import bisect
import functools
import io
import os
from dataclasses import dataclass, field
from typing import Callable

from . import maps
from .cfi import ObjectCfi, for_file, for_image
from .cfi_expr import UnwindError
from .errors import StepperError
from .loaded import loaded_objects
from .symbols import ElfSymbols


@dataclass
class CodeObject:
    """One object mapped at [start, end) with run-time address = bias + link-time address."""

    path: str
    bias: int
    start: int
    end: int
    image: bytes | None = None      # the bytes of an object without a file (the vDSO)
    _cfi: ObjectCfi | None = field(default=None, repr=False)
    _names: list | None = field(default=None, repr=False)
    _seen: dict = field(default_factory=dict, repr=False)

    @property
    def cfi(self) -> ObjectCfi:
        if self._cfi is None:
            self._cfi = (for_image(self.image, self.path) if self.image is not None
                         else for_file(self.path))
        return self._cfi

    def symbol(self, address: int) -> tuple[str, int] | None:
        """(function name, offset) for run-time `address`, or None outside every function.
        Answers are kept per address: a stack shows the same return addresses again."""
        vaddr = address - self.bias
        if vaddr in self._seen:
            return self._seen[vaddr]
        if len(self._seen) > 65536:
            self._seen.clear()
        found = self._seen[vaddr] = self._lookup(vaddr)
        return found

    def _lookup(self, vaddr: int) -> tuple[str, int] | None:
        if self.image is None:
            stub = plt_stub(self.path, vaddr)
            if stub is not None:
                return stub
            try:
                hit = ElfSymbols.load(self.path).containing(vaddr)
            except StepperError:
                return None
            return None if hit is None else (hit[0].name, hit[1])
        if self._names is None:
            self._names = _image_functions(self.image)
        values = [value for value, _size, _name in self._names]
        i = bisect.bisect_left(values, values[bisect.bisect_right(values, vaddr) - 1]) \
            if values and values[0] <= vaddr else -1
        if i >= 0:
            value, size, name = self._names[i]
            if vaddr < value + max(size, 1):
                return name, vaddr - value
        return None

    def address_of(self, name: str) -> int | None:
        """Run-time address of function `name` in this object, or None."""
        if self.image is None:
            try:
                found = ElfSymbols.load(self.path).lookup(name)
            except StepperError:
                return None
            return found[0].value + self.bias if found else None
        if self._names is None:
            self._names = _image_functions(self.image)
        return next((value + self.bias for value, _size, n in self._names if n == name), None)


def plt_stub(path: str, vaddr: int) -> tuple[str, int] | None:
    """("NAME@plt", offset) when link-time `vaddr` is in a PLT stub of file `path`.

    The symbol tables name no PLT stub (a size-0 label before it would claim it); like gdb,
    name each after the symbol of its `.rela.plt` relocation: with lazy binding `.plt` entry
    i + 1 (entry 0 is the resolver's) jumps through relocation i; with IBT, `.plt.sec`
    entry i does."""
    for start, size, entry_size, first, stubs in _plt_sections(os.path.realpath(path)):
        if start <= vaddr < start + size:
            index = (vaddr - start) // entry_size - first
            if 0 <= index < len(stubs):
                return f"{stubs[index]}@plt", (vaddr - start) % entry_size
    return None


@functools.lru_cache(maxsize=64)
def _plt_sections(path: str) -> list[tuple[int, int, int, int, list[str]]]:
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile   # imported here: a run without stacks needs none

    try:
        with open(path, "rb") as stream:
            elf = ELFFile(stream)
            relocations = elf.get_section_by_name(".rela.plt")
            if relocations is None:
                return []
            table = elf.get_section(relocations["sh_link"])
            names = [table.get_symbol(r["r_info_sym"]).name for r in relocations.iter_relocations()]
            sections = []
            for name, first in ((".plt.sec", 0), (".plt", 1)):
                section = elf.get_section_by_name(name)
                if section is not None:
                    entry = section["sh_entsize"] or 16
                    sections.append((section["sh_addr"], section["sh_size"], entry, first, names))
                    if name == ".plt.sec":
                        break       # with IBT, .plt only holds the lazy-binding trampolines
            return sections
    except (OSError, ELFError):
        return []


def _image_functions(image: bytes) -> list[tuple[int, int, str]]:
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile   # imported here: a run without stacks needs none

    try:
        elf = ELFFile(io.BytesIO(image))
        found = []
        for section in (".symtab", ".dynsym"):
            table = elf.get_section_by_name(section)
            if table is None:
                continue
            for sym in table.iter_symbols():
                if sym["st_info"]["type"] == "STT_FUNC" and sym["st_value"]:
                    found.append((sym["st_value"], sym["st_size"], sym.name))
        # Of two names for one address, prefer the public one (clock_gettime, not
        # __vdso_clock_gettime), as gdb does.
        found.sort(key=lambda s: (s[0], s[2].startswith("__vdso_")))
        return found
    except ELFError:
        return []


def vdso(mappings: list[maps.Mapping], read: Callable[[int, int], bytes]) -> CodeObject | None:
    """The vDSO of a process whose mappings are `mappings`, its image read with `read`."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile   # imported here: a run without stacks needs none

    mine = [m for m in mappings if m.path == "[vdso]"]
    if not mine:
        return None
    start, end = min(m.start for m in mine), max(m.end for m in mine)
    try:
        image = read(start, end - start)
        elf = ELFFile(io.BytesIO(image))
        first = min(s["p_vaddr"] for s in elf.iter_segments() if s["p_type"] == "PT_LOAD")
    except (OSError, StepperError, ELFError, ValueError) as e:
        raise UnwindError(f"cannot read the vDSO image at {start:#x}: {e}") from None
    return CodeObject("[vdso]", start - (first - first % 4096), start, end, image=image)


def process_objects(pid: int, read: Callable[[int, int], bytes]) -> list[CodeObject]:
    """Every ELF file process `pid` maps, and its vDSO: what `unwind.frames` walks through.

    Read it again after the program loads or unloads a library (dlopen, dlclose)."""
    objects = [CodeObject(o.path, o.bias, o.start, o.end) for o in loaded_objects(pid)]
    try:
        mappings = maps.read(pid)
    except OSError as e:
        raise UnwindError(f"cannot read /proc/{pid}/maps: {e.strerror}") from None
    v = vdso(mappings, read)
    if v is not None:
        objects.append(v)
    return sorted(objects, key=lambda o: o.start)


def find(objects: list[CodeObject], address: int) -> CodeObject | None:
    """The object whose extent holds run-time `address` (objects sorted by start)."""
    for o in objects:
        if o.start <= address < o.end:
            return o
    return None
