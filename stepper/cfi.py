"""The call-frame information of one ELF image, indexed for lookups by address.

Why a module: unwinding asks "which row of which FDE covers this address?" once per frame,
again and again in the same few objects. pyelftools decodes `.eh_frame` and `.debug_frame`
(CIE/FDE parsing, augmentations, pointer encodings, the row tables with remember/restore
state); this module only parses each image once, keeps the FDEs sorted by start address
for a binary search, and keeps each decoded table's row addresses for a second binary
search. Images are shared while the file is unchanged on disk (like stepper.symbols), and
an image read from memory (the vDSO) is cached by its bytes.

Addresses here are link-time (file) addresses: the caller subtracts the load bias.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import io
import os
from dataclasses import dataclass
from typing import BinaryIO

from elftools.common.exceptions import DWARFError, ELFError
from elftools.dwarf.callframe import FDE
from elftools.dwarf.dwarf_expr import DWARFExprOp, DWARFExprParser
from elftools.elf.elffile import ELFFile

from .cfi_expr import UnwindError


@dataclass(frozen=True)
class Row:
    """The rules in force at one address: `cfa` is a pyelftools CFARule, `rules` maps DWARF
    register numbers to RegisterRule; `signal` is true in a signal trampoline (the CIE's
    'S' augmentation), whose caller resumes at its exact pc rather than after a call."""

    cfa: object
    rules: dict
    signal: bool
    fde_start: int


class ObjectCfi:
    """The FDEs of one image (`.eh_frame` first, then `.debug_frame` for what it adds)."""

    def __init__(self, stream: BinaryIO, name: str) -> None:
        self.name = name
        try:
            elf = ELFFile(stream)
            self._fdes: list[tuple[int, int, FDE]] = []
            self._parser = None
            if elf.has_dwarf_info() or elf.get_section_by_name(".eh_frame") is not None:
                dwarf = elf.get_dwarf_info(relocate_dwarf_sections=False)
                self._parser = DWARFExprParser(dwarf.structs)
                entries = []
                if dwarf.has_EH_CFI():
                    entries += dwarf.EH_CFI_entries()
                if dwarf.has_CFI():
                    entries += dwarf.CFI_entries()
                self._fdes = _sorted_fdes(entries)
        except (ELFError, DWARFError, AssertionError, ValueError) as e:
            raise UnwindError(f"cannot read the call-frame information of {name}: {e}") from None
        self._starts = [start for start, _end, _fde in self._fdes]
        self._rows: dict[int, tuple[list[int], list[dict]]] = {}
        self._exprs: dict[tuple, list[DWARFExprOp]] = {}

    def __len__(self) -> int:
        return len(self._fdes)

    def row(self, vaddr: int) -> Row | None:
        """The rules at link-time address `vaddr`, or None where no FDE covers it."""
        i = bisect.bisect_right(self._starts, vaddr) - 1
        if i < 0:
            return None
        start, end, fde = self._fdes[i]
        if not start <= vaddr < end:
            return None
        pcs, lines = self._table(i, fde)
        j = bisect.bisect_right(pcs, vaddr) - 1
        if j < 0:
            return None
        line = lines[j]
        rules = {k: v for k, v in line.items() if isinstance(k, int)}
        signal = b"S" in (fde.cie.header.get("augmentation") or b"")
        return Row(line["cfa"], rules, signal, start)

    def expression(self, raw) -> list[DWARFExprOp]:
        """The operations of an expression's bytes (parsed once per distinct expression)."""
        key = tuple(raw)
        ops = self._exprs.get(key)
        if ops is None:
            if self._parser is None:
                raise UnwindError(f"{self.name}: a call-frame expression without DWARF structs")
            try:
                ops = self._exprs[key] = self._parser.parse_expr(list(raw))
            except (KeyError, ValueError) as e:
                raise UnwindError(f"{self.name}: cannot parse a call-frame expression ({e})") \
                    from None
        return ops

    def _table(self, index: int, fde: FDE) -> tuple[list[int], list[dict]]:
        cached = self._rows.get(index)
        if cached is None:
            lines = fde.get_decoded().table
            cached = self._rows[index] = ([line["pc"] for line in lines], lines)
        return cached


def _sorted_fdes(entries) -> list[tuple[int, int, FDE]]:
    """FDEs as (start, end, fde) sorted by start, without overlaps: where two FDEs cover an
    address (an `.eh_frame` and a `.debug_frame` entry for one function), the one starting
    first is kept, and at equal starts the `.eh_frame` one."""
    found = []
    for order, entry in enumerate(entries):
        if isinstance(entry, FDE) and entry.cie is not None and entry["address_range"]:
            start = entry["initial_location"]
            found.append((start, order, start + entry["address_range"], entry))
    found.sort(key=lambda item: (item[0], item[1]))
    result: list[tuple[int, int, FDE]] = []
    for start, _order, end, fde in found:
        if result and start < result[-1][1]:
            continue
        result.append((start, end, fde))
    return result


@functools.lru_cache(maxsize=64)
def _for_file(path: str, size: int, mtime: int) -> ObjectCfi:
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except OSError as e:
        raise UnwindError(f"cannot read {path}: {e.strerror}") from None
    return ObjectCfi(io.BytesIO(data), path)


def for_file(path: str) -> ObjectCfi:
    """The CFI of the ELF file `path`, parsed once while the file is unchanged on disk."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError as e:
        raise UnwindError(f"cannot read {path}: {e.strerror}") from None
    return _for_file(real, st.st_size, st.st_mtime_ns)


_images: dict[str, ObjectCfi] = {}


def for_image(image: bytes, name: str) -> ObjectCfi:
    """The CFI of an ELF image read from memory (the vDSO), cached by its content."""
    key = hashlib.sha1(image).hexdigest()
    cfi = _images.get(key)
    if cfi is None:
        cfi = _images[key] = ObjectCfi(io.BytesIO(image), name)
    return cfi
