"""The call-frame information of one ELF image, indexed for lookups by address.

Why a module: unwinding asks "which row of which FDE covers this address?" once per frame,
again and again in the same few objects. pyelftools decodes `.eh_frame` and `.debug_frame`
(CIE/FDE parsing, augmentations, pointer encodings, the row tables with remember/restore
state); this module only parses each image once, keeps the FDEs sorted by start address
for a binary search, and keeps each decoded table's row addresses for a second binary
search. Images are shared while the file is unchanged on disk (like stepper.symbols), and
an image read from memory (the vDSO) is cached by its bytes.

Parsing every CIE and FDE of libc costs about a second and a half; what a lookup needs from
that parse (each FDE's range and where it sits in its section) is kept between runs in the
ELF facts cache (stepper.elf_cache, keyed by the file's build-id, path, size and mtime), and a
warm run parses only the FDEs it uses, at their offsets (pyelftools' `_parse_entry_at`, the
call its own `get_entries` makes for each entry in turn). An index entry that does not match
the FDE found at its offset makes the whole section parsed again, never trusted.

Addresses here are link-time (file) addresses: the caller subtracts the load bias.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import io
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from . import elf_cache
from .cfi_expr import DWARF_REGS, UnwindError, reg_name
from .elf import build_id

if TYPE_CHECKING:   # pyelftools' DWARF modules (~25 ms of imports) load with a first image
    from elftools.dwarf.callframe import FDE, CallFrameInfo
    from elftools.dwarf.dwarf_expr import DWARFExprOp


@dataclass(frozen=True)
class Row:
    """The rules in force at one address: `cfa` is a pyelftools CFARule, `rules` maps DWARF
    register numbers to RegisterRule; `signal` is true in a signal trampoline (the CIE's
    'S' augmentation), whose caller resumes at its exact pc rather than after a call."""

    cfa: object
    rules: dict
    signal: bool
    fde_start: int
    #: what every unwind through this row needs, worked out once: the registers saved at
    #: CFA+N up to the return address, as (name, N - low) over one read of `span` bytes at
    #: CFA+low; the other rules up to the return address; the CFA's base register by name
    #: (None for an expression)
    saved: tuple = ()
    low: int = 0
    span: int = 0
    others: tuple = ()
    base: str | None = None

    @classmethod
    def of(cls, cfa, rules: dict, signal: bool, fde_start: int) -> "Row":
        offsets = [(n, r.arg) for n, r in rules.items() if r.type == "OFFSET" and n <= 16]
        low = min((arg for _n, arg in offsets), default=0)
        span = max((arg for _n, arg in offsets), default=low - 8) - low + 8
        saved = tuple((DWARF_REGS[n], arg - low) for n, arg in offsets)
        others = tuple((n, r) for n, r in rules.items() if r.type != "OFFSET" and n <= 16)
        base = reg_name(cfa.reg) if cfa.expr is None and cfa.reg is not None else None
        return cls(cfa, rules, signal, fde_start, saved, low, span, others, base)


class ObjectCfi:
    """The FDEs of one image (`.eh_frame` first, then `.debug_frame` for what it adds)."""

    def __init__(self, stream: BinaryIO, name: str, path: str | None = None) -> None:
        """`path`: the file the image was read from, to keep its FDE index in the ELF facts
        cache (None for an image without a file)."""
        from elftools.common.exceptions import DWARFError, ELFError
        from elftools.dwarf.dwarf_expr import DWARFExprParser
        from elftools.elf.elffile import ELFFile

        self.name = name
        #: (start, end, FDE, or (section, offset) until parsed), sorted by start
        self._fdes: list[tuple[int, int, object]] = []
        self._sections: list[CallFrameInfo] = []
        self._parser = None
        try:
            elf = ELFFile(stream)
            if elf.has_dwarf_info() or elf.get_section_by_name(".eh_frame") is not None:
                dwarf = elf.get_dwarf_info(relocate_dwarf_sections=False)
                self._parser = DWARFExprParser(dwarf.structs)
                if dwarf.has_EH_CFI():
                    self._sections.append(_section(dwarf, dwarf.eh_frame_sec, True))
                if dwarf.has_CFI():
                    self._sections.append(_section(dwarf, dwarf.debug_frame_sec, False))
                if path is None:
                    self._fdes = self._parse_all()
                else:
                    key = [build_id(elf), elf_cache.file_identity(path)]
                    index = elf_cache.cached("cfi", key, self._index, _index_valid)
                    self._fdes = [(start, end, (section, offset))
                                  for start, end, section, offset in index]
        except (ELFError, DWARFError, AssertionError, ValueError, KeyError) as e:
            raise UnwindError(f"cannot read the call-frame information of {name}: {e}") from None
        self._starts = [start for start, _end, _fde in self._fdes]
        self._rows: dict[int, tuple[list[int], list[dict]]] = {}
        self._exprs: dict[tuple, list[DWARFExprOp]] = {}
        self._seen: dict[int, Row | None] = {}

    def __len__(self) -> int:
        return len(self._fdes)

    def row(self, vaddr: int) -> Row | None:
        """The rules at link-time address `vaddr`, or None where no FDE covers it. Answers
        are kept per address: stacks return to the same few addresses again and again."""
        if vaddr in self._seen:
            return self._seen[vaddr]
        found = self._row(vaddr)
        if len(self._seen) > 65536:
            self._seen.clear()
        self._seen[vaddr] = found
        return found

    def _row(self, vaddr: int) -> Row | None:
        i = bisect.bisect_right(self._starts, vaddr) - 1
        if i < 0:
            return None
        start, end, fde = self._fdes[i]
        if not start <= vaddr < end:
            return None
        try:
            fde = self._fde(i)
        except _Reindexed:
            return self._row(vaddr)
        pcs, lines = self._table(i, fde)
        j = bisect.bisect_right(pcs, vaddr) - 1
        if j < 0:
            return None
        line = lines[j]
        rules = {k: v for k, v in line.items() if isinstance(k, int)}
        signal = b"S" in (fde.cie.header.get("augmentation") or b"")
        return Row.of(line["cfa"], rules, signal, start)

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

    def _parse_all(self) -> list[tuple[int, int, FDE]]:
        entries = []
        self._section_of: dict[int, int] = {}
        for n, section in enumerate(self._sections):
            found = section.get_entries()
            self._section_of.update((id(entry), n) for entry in found)
            entries += found
        return _sorted_fdes(entries)

    def _index(self) -> list[list[int]]:
        """[start, end, section number, offset] of every FDE kept (what the cache holds);
        the FDEs themselves stay parsed for this run."""
        fdes = self._parse_all()
        rows = [[start, end, self._section_of[id(fde)], fde.offset] for start, end, fde in fdes]
        self._parsed = {(row[2], row[3]): fde for row, (_s, _e, fde) in zip(rows, fdes)}
        return rows

    def _fde(self, i: int) -> FDE:
        """FDE number `i`, parsed now if the index came from the cache."""
        from elftools.dwarf.callframe import FDE

        start, end, fde = self._fdes[i]
        if isinstance(fde, FDE):
            return fde
        number, offset = fde
        section = self._sections[number]
        parsed = getattr(self, "_parsed", {}).get((number, offset))
        try:
            if parsed is None:
                parsed = section._parse_entry_at(offset)
        except Exception as e:  # noqa: BLE001 - whatever a wrong offset makes the parser do
            parsed = e
        if not isinstance(parsed, FDE) or parsed["initial_location"] != start:
            self._fdes = self._parse_all()    # the index does not describe this file
            self._starts = [s for s, _e, _f in self._fdes]
            self._rows.clear()
            raise _Reindexed()
        self._fdes[i] = (start, end, parsed)
        return parsed

    def _table(self, index: int, fde) -> tuple[list[int], list[dict]]:
        cached = self._rows.get(index)
        if cached is None:
            from elftools.common.exceptions import DWARFError
            try:
                lines = fde.get_decoded().table
            except (DWARFError, AssertionError, ValueError, KeyError) as e:
                # pyelftools 0.33 stops at some opcodes (one FDE of Debian's libc 2.36)
                raise UnwindError(f"cannot decode the call-frame rules of {self.name} at "
                                  f"{fde['initial_location']:#x}: {e}") from None
            cached = self._rows[index] = ([line["pc"] for line in lines], lines)
        return cached


class _Reindexed(Exception):
    """A cached FDE index did not match its file: the FDEs were parsed again."""


def _section(dwarf, section, for_eh_frame: bool) -> CallFrameInfo:
    """The CFI parser of one section, as pyelftools' EH_CFI_entries/CFI_entries make it."""
    from elftools.dwarf.callframe import CallFrameInfo

    return CallFrameInfo(stream=section.stream, size=section.size, address=section.address,
                         base_structs=dwarf.structs, for_eh_frame=for_eh_frame)


def _index_valid(index) -> bool:
    return isinstance(index, list) and all(
        isinstance(row, list) and len(row) == 4 and all(type(v) is int and v >= 0 for v in row)
        and row[0] < row[1] and row[2] in (0, 1) for row in index)


def _sorted_fdes(entries) -> list[tuple[int, int, FDE]]:
    """FDEs as (start, end, fde) sorted by start, without overlaps: where two FDEs cover an
    address (an `.eh_frame` and a `.debug_frame` entry for one function), the one starting
    first is kept, and at equal starts the `.eh_frame` one."""
    from elftools.dwarf.callframe import FDE

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
    return ObjectCfi(io.BytesIO(data), path, path)


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
