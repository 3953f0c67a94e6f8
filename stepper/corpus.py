"""Probe-site corpora: which instructions sit where people put breakpoints, and how many of
them stepper emulates.

"People probe function prologues most of the time" is a claim; a corpus measures it. A corpus
is harvested from real ELF files (pyelftools reads them, capstone decodes) and holds two kinds
of site:

- ``entry``: the first `ENTRY_INSTRUCTIONS` instructions of every function (an STT_FUNC
  symbol with a nonzero size in an executable section), where probes usually go;
- ``sample``: a uniform, seeded random sample of every instruction start of ``.text`` (a
  linear sweep), standing for "a probe anywhere".

Unique encodings are deduplicated with counts into gzip'd JSON lines whose bytes depend only
on the inputs and the options, so a rebuilt corpus diffs clean. Coverage (stepper.coverage)
classifies each encoding with the engine's own policy, so the numbers always describe the
code as it is, not a list kept by hand.
"""

from __future__ import annotations

import bisect
import gzip
import io
import json
import os
import random
import struct
import tempfile
import zlib
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import capstone
from elftools.common.exceptions import DWARFError, ELFError
from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile

from .errors import StepperError
from .elf import looks_like_elf
from .symbols import name_preference

DEFAULT_SAMPLE = 2000
DEFAULT_SEED = 0
ENTRY_INSTRUCTIONS = 4
EXAMPLES_PER_ROW = 3
KINDS = ("entry", "sample")
MAX_INSN = 15
SWEEP_CHUNK = 1 << 16

_GZIP_MAGIC = b"\x1f\x8b"


class CorpusError(StepperError):
    """Bad input to a corpus command (missing file, not an ELF, malformed corpus)."""


@dataclass(frozen=True)
class Site:
    """One probe site: an instruction's encoding and where it was found.

    `address` is the ELF virtual address (load base 0 for shared objects and PIEs), at which
    the instruction is decoded, since RIP-relative forms and branch targets depend on it.
    `symbol`/`offset` locate it in a function when one covers it, else both are None.
    """

    kind: str
    code: bytes
    object: str
    address: int
    symbol: str | None
    offset: int | None


# --------------------------------------------------------------------------- harvesting

def _open_elf(path: Path) -> tuple[ELFFile, io.BytesIO]:
    """Read the whole file into memory (so no handle leaks) and check it is x86-64 ELF."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CorpusError(f"{path}: no such file") from None
    except OSError as e:
        raise CorpusError(f"{path}: cannot read: {e.strerror}") from None
    if not looks_like_elf(data):
        raise CorpusError(f"{path}: not an ELF file")
    stream = io.BytesIO(data)
    try:
        elf = ELFFile(stream)
        machine = elf["e_machine"]
    except ELFError as e:
        raise CorpusError(f"{path}: malformed ELF file: {e}") from None
    if machine != "EM_X86_64" or elf.elfclass != 64:
        raise CorpusError(f"{path}: not an x86-64 ELF file (machine {machine})")
    if elf["e_type"] not in ("ET_EXEC", "ET_DYN"):
        # Relocatable objects put every section at address 0: sites would have no address.
        raise CorpusError(f"{path}: not an executable or shared object ({elf['e_type']}); "
                          "link it first")
    return elf, stream


@dataclass
class _Code:
    """The executable sections of one ELF, for finding the bytes at a virtual address."""

    sections: list[tuple[int, int, bytes]] = field(default_factory=list)  # (start, end, data)

    @classmethod
    def of(cls, elf: ELFFile) -> "_Code":
        code = cls()
        for section in elf.iter_sections():
            header = section.header
            if (header.sh_flags & SH_FLAGS.SHF_EXECINSTR and header.sh_type != "SHT_NOBITS"
                    and header.sh_size):
                code.sections.append((header.sh_addr, header.sh_addr + header.sh_size,
                                      section.data()))
        code.sections.sort()
        return code

    def window(self, address: int, limit: int) -> bytes:
        """Up to `limit` bytes from `address`, never crossing the end of its section."""
        for start, end, data in self.sections:
            if start <= address < end:
                offset = address - start
                return data[offset:offset + min(limit, end - address)]
        return b""


def _function_symbols(elf: ELFFile) -> dict[int, tuple[int, str]]:
    """address -> (size, name) for every STT_FUNC symbol with a nonzero size in an
    executable section, from .symtab and .dynsym; aliases collapse onto one address."""
    executable = {i for i, s in enumerate(elf.iter_sections())
                  if s.header.sh_flags & SH_FLAGS.SHF_EXECINSTR}
    functions: dict[int, tuple[int, str]] = {}
    ranks: dict[int, tuple] = {}
    for section in elf.iter_sections():
        if section.header.sh_type not in ("SHT_SYMTAB", "SHT_DYNSYM"):
            continue
        for symbol in section.iter_symbols():
            index = symbol["st_shndx"]
            if (symbol["st_info"]["type"] != "STT_FUNC" or not symbol["st_size"]
                    or not isinstance(index, int) or index not in executable):
                continue
            address, size, name = symbol["st_value"], symbol["st_size"], symbol.name
            rank = name_preference(name, symbol["st_info"]["bind"].removeprefix("STB_"))
            known = functions.get(address)
            if known is None or rank < ranks[address]:
                functions[address] = (max(size, known[0]) if known else size, name)
                ranks[address] = rank
    return functions


def _eh_frame_functions(elf: ELFFile, text: tuple[int, int] | None) -> dict[int, int]:
    """address -> size of every call-frame (FDE) range starting in .text.

    The compiler emits call-frame information for every function and stripping keeps it
    (unwinding needs it), so it finds the functions of a stripped executable that exports
    no symbols for them.
    """
    from elftools.dwarf.callframe import FDE

    if text is None or not elf.has_dwarf_info():
        return {}
    entries = elf.get_dwarf_info().EH_CFI_entries() or []
    functions: dict[int, int] = {}
    for entry in entries:
        if isinstance(entry, FDE):
            start, size = entry.header["initial_location"], entry.header["address_range"]
            if size and text[0] <= start < text[1]:
                functions[start] = max(size, functions.get(start, 0))
    return functions


def _lite_decoder() -> capstone.Cs:
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = False
    return md


def _sweep(data: bytes, md: capstone.Cs) -> tuple[array, array]:
    """Linear sweep: (offsets, lengths) of every instruction start in `data`.

    Decodes in chunks (capstone decodes a whole buffer into one array) and skips one byte
    where capstone finds no valid instruction.
    """
    offsets, lengths = array("Q"), array("B")
    position, total = 0, len(data)
    while position < total:
        limit = min(position + SWEEP_CHUNK, total)
        window = data[position:limit + MAX_INSN]
        reached = position
        for address, size, _, _ in md.disasm_lite(window, position):
            if address >= limit:
                break
            offsets.append(address)
            lengths.append(size)
            reached = address + size
        # Past the chunk: carry on from there. Short of it: capstone met bytes that are no
        # valid instruction (or a truncated one at the very end); step over one byte.
        position = reached if reached >= limit else reached + 1
    return offsets, lengths


def _decode_first(md: capstone.Cs, code: bytes, address: int,
                  count: int) -> list[tuple[int, bytes]]:
    """(address, bytes) of up to `count` instructions from the start of `code`."""
    return [(a, code[a - address:a - address + size])
            for a, size, _, _ in md.disasm_lite(code, address, count)]


class _Locator:
    """Finds the function covering an address (for naming sampled sites)."""

    def __init__(self, functions: dict[int, tuple[int, str | None]]) -> None:
        self.starts = sorted(functions)
        self.functions = functions

    def locate(self, address: int) -> tuple[str | None, int | None]:
        i = bisect.bisect_right(self.starts, address) - 1
        for start in reversed(self.starts[max(0, i - 7):i + 1]):  # a few, for nesting
            size, name = self.functions[start]
            if address < start + size:
                return name, address - start
        return None, None


def harvest(path: str | os.PathLike, *, sample: int = DEFAULT_SAMPLE, seed: int = DEFAULT_SEED,
            eh_frame: bool = False) -> list[Site]:
    """Every entry site and `sample` uniformly sampled instruction starts of one ELF file.

    The sample is drawn with a `random.Random` seeded from `seed` and the file's name, so the
    same inputs give the same sites and adding a binary to a corpus leaves the others' sample
    alone. `eh_frame` adds, as entries, functions known only from call-frame information
    (stripped executables). Raises CorpusError for anything but a readable x86-64 ELF file.
    """
    if sample < 0:
        raise CorpusError(f"--sample must be >= 0, not {sample}")
    path = Path(path)
    elf, _stream = _open_elf(path)
    try:
        return _harvest(elf, path.name, sample, seed, eh_frame)
    except _MALFORMED as e:
        raise CorpusError(f"{path}: malformed ELF file: {e}") from None


# What pyelftools raises on a damaged file (it parses lazily, so anywhere during a harvest).
_MALFORMED = (ELFError, DWARFError, ValueError, struct.error, EOFError, IndexError)


def _harvest(elf: ELFFile, name: str, sample: int, seed: int, eh_frame: bool) -> list[Site]:
    text = elf.get_section_by_name(".text")
    if text is not None and text.header.sh_type == "SHT_NOBITS":
        text = None
    text_range = (text.header.sh_addr, text.header.sh_addr + text.header.sh_size) if text else None
    functions: dict[int, tuple[int, str | None]] = dict(_function_symbols(elf))
    if eh_frame:
        for start, size in _eh_frame_functions(elf, text_range).items():
            functions.setdefault(start, (size, None))
    sites = _entry_sites(_Code.of(elf), functions, name)
    if text is not None and sample:
        sites += _sample_sites(text.header.sh_addr, text.data(), functions, name, sample, seed)
    return sites


def _entry_sites(code: _Code, functions: dict[int, tuple[int, str | None]],
                 name: str) -> list[Site]:
    """The first ENTRY_INSTRUCTIONS instructions of each function, never past its end."""
    md = _lite_decoder()
    sites = []
    for start in sorted(functions):
        size, symbol = functions[start]
        window = code.window(start, min(size, ENTRY_INSTRUCTIONS * MAX_INSN))
        for address, encoding in _decode_first(md, window, start, ENTRY_INSTRUCTIONS):
            sites.append(Site("entry", encoding, name, address, symbol, address - start))
    return sites


def _sample_sites(base: int, data: bytes, functions: dict[int, tuple[int, str | None]],
                  name: str, sample: int, seed: int) -> list[Site]:
    """`sample` instruction starts of .text (at `base`), uniformly, seeded by seed and name."""
    offsets, lengths = _sweep(data, _lite_decoder())
    rng = random.Random(f"{seed}/{name}")
    chosen = sorted(rng.sample(range(len(offsets)), min(sample, len(offsets))))
    locator = _Locator(functions)
    sites = []
    for i in chosen:
        offset = offsets[i]
        symbol, within = locator.locate(base + offset)
        sites.append(Site("sample", data[offset:offset + lengths[i]], name, base + offset,
                          symbol, within))
    return sites


# --------------------------------------------------------------------------- rows and files

def _example(site: Site) -> dict:
    return {"object": site.object, "address": site.address, "symbol": site.symbol,
            "offset": site.offset}


def _example_order(site: Site) -> tuple:
    """A total order on sites (None sorts first), so examples never depend on input order."""
    return (site.object, site.address, site.symbol is not None, site.symbol or "",
            site.offset is not None, site.offset or 0)


def deduplicate(sites: Iterable[Site]) -> list[dict]:
    """One row per (kind, encoding): its occurrence count and the first few locations.

    Rows come out sorted by kind then encoding, and examples by object then address, so
    the result does not depend on the order the inputs were given in. The row's `mnemonic` and
    `text` are capstone's, decoded at the first example's address.
    """
    groups: dict[tuple[str, bytes], list[Site]] = {}
    for site in sites:
        groups.setdefault((site.kind, site.code), []).append(site)
    md = _lite_decoder()
    rows = []
    for (kind, code), members in sorted(groups.items()):
        examples = sorted(members, key=_example_order)[:EXAMPLES_PER_ROW]
        _, _, mnemonic, operands = next(md.disasm_lite(code, examples[0].address, 1))
        rows.append({"kind": kind, "bytes": code.hex(), "count": len(members),
                     "mnemonic": mnemonic, "text": f"{mnemonic} {operands}".strip(),
                     "examples": [_example(s) for s in examples]})
    return rows


def build(paths: Iterable[str | os.PathLike], *, sample: int = DEFAULT_SAMPLE,
          seed: int = DEFAULT_SEED, eh_frame: bool = False) -> list[dict]:
    """Harvest every file and deduplicate the sites of all of them into corpus rows."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise CorpusError("no input files")
    names = Counter(p.name for p in paths)
    twice = sorted(n for n, c in names.items() if c > 1)
    if twice:
        raise CorpusError(f"two inputs share the file name {twice[0]!r}: a site's object "
                          "is its file name, so build them into separate corpora")
    sites: list[Site] = []
    for path in paths:
        sites.extend(harvest(path, sample=sample, seed=seed, eh_frame=eh_frame))
    return deduplicate(sites)


def dumps(rows: Iterable[dict]) -> bytes:
    """The gzip'd JSON lines of `rows`, byte-for-byte reproducible (no name or time in the
    gzip header, sorted keys, fixed separators)."""
    text = "".join(json.dumps(row, sort_keys=True, separators=(",", ":")) + "\n"
                   for row in rows)
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as out:
        out.write(text.encode())
    return buffer.getvalue()


def write(rows: Iterable[dict], path: str | os.PathLike) -> None:
    """Write a corpus atomically: a failure leaves any previous file untouched."""
    path = Path(path)
    if not path.parent.is_dir():
        raise CorpusError(f"{path}: directory {str(path.parent)!r} does not exist")
    data = dumps(rows)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


_ROW_FIELDS = {"kind": str, "bytes": str, "count": int, "examples": list}


def _check_row(row: object, where: str) -> dict:
    if not isinstance(row, dict):
        raise CorpusError(f"{where}: a row must be a JSON object")
    for key, kind in _ROW_FIELDS.items():
        if not isinstance(row.get(key), kind):
            raise CorpusError(f"{where}: field {key!r} missing or not a {kind.__name__}")
    if isinstance(row["count"], bool) or row["count"] < 1:
        raise CorpusError(f"{where}: 'count' must be a positive integer")
    if row["kind"] not in KINDS:
        raise CorpusError(f"{where}: kind must be one of {', '.join(KINDS)}, not {row['kind']!r}")
    try:
        row["code"] = bytes.fromhex(row["bytes"])
    except ValueError:
        raise CorpusError(f"{where}: 'bytes' is not hex") from None
    examples = row["examples"]
    if not examples or not all(isinstance(e, dict) and isinstance(e.get("address"), int)
                               for e in examples):
        raise CorpusError(f"{where}: 'examples' must hold objects with an integer 'address'")
    return row


def read(path: str | os.PathLike) -> list[dict]:
    """The rows of a corpus file, each checked (plus `code`, the encoding as bytes)."""
    path = Path(path)
    try:
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            rows = []
            for number, line in enumerate(lines, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise CorpusError(f"{path}:{number}: not JSON: {e.msg}") from None
                    rows.append(_check_row(row, f"{path}:{number}"))
            return rows
    except FileNotFoundError:
        raise CorpusError(f"{path}: no such file") from None
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as e:
        raise CorpusError(f"{path}: not a readable gzip'd corpus: {e}") from None


def load(path: str | os.PathLike, *, sample: int = DEFAULT_SAMPLE, seed: int = DEFAULT_SEED,
         eh_frame: bool = False) -> list[dict]:
    """Rows of a corpus file, or of an ELF file harvested on the fly (same options as build)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except FileNotFoundError:
        raise CorpusError(f"{path}: no such file") from None
    except OSError as e:
        raise CorpusError(f"{path}: cannot read: {e.strerror}") from None
    if magic.startswith(_GZIP_MAGIC):
        return read(path)
    if looks_like_elf(magic):
        return [_check_row(row, str(path))
                for row in build([path], sample=sample, seed=seed, eh_frame=eh_frame)]
    raise CorpusError(f"{path}: neither an ELF file nor a corpus (.jsonl.gz)")
