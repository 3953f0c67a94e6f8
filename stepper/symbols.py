"""ELF function symbols, DWARF line tables and load biases: the facts probe specs resolve against.

Everything here reads files (with pyelftools, through stepper.elf); nothing here touches a
tracee (what a process has mapped is stepper.loaded's). A file is parsed once per process run (`ElfSymbols.load` caches
by path, size and mtime) because a glob over libc and a later `containing()` lookup for the
exit table must not pay for parsing the same 10,000-symbol table twice.

Symbol names follow the dynamic linker's view of versions: `realpath@@GLIBC_2.3` (the default
version) is called `realpath`, while a non-default version keeps its suffix
(`realpath@GLIBC_2.2.5`), so a plain name means what a program calling it by name reaches.
"""

from __future__ import annotations

import bisect
import functools
import os
import posixpath
from typing import Iterator

from . import elf as elfread
from . import elf_cache
from .elf import STT_GNU_IFUNC, LineRow, Symbol
from .errors import StepperError

__all__ = ["ElfSymbols", "ElfFileError", "Symbol", "LineRow", "preference", "name_preference",
           "path_matches", "STT_GNU_IFUNC", "DEBUG_ROOT"]

DEBUG_ROOT = "/usr/lib/debug"
_BINDING_RANK = {"GLOBAL": 0, "WEAK": 1, "LOCAL": 2}
DF_1_PIE = 0x08000000
WHOLE_SEGMENT = 16 << 20   # `read` keeps segments up to this size in memory


class ElfFileError(StepperError):
    """A file that should be an x86-64 ELF object cannot be read as one."""


def preference(symbol: Symbol) -> tuple:
    """Sort key choosing the name to show among aliases of one address (name_preference)."""
    return name_preference(symbol.name, symbol.binding)


def name_preference(name: str, binding: str) -> tuple:
    """Sort key choosing the name to show among aliases of one address: the one rule for the
    probe table and the corpus, so both name a site alike.

    The name a user would write wins: fewer leading underscores (`getpid` over `__getpid`),
    then exported over local (`binding` GLOBAL, WEAK, LOCAL), then unversioned, then the
    shorter (aliases tend to decorate: `t_one` over `t_one_alias`), then alphabetical so the
    choice is stable.
    """
    underscores = len(name) - len(name.lstrip("_"))
    return (underscores, _BINDING_RANK.get(binding, 3), "@" in name, len(name), name)


class ElfSymbols:
    """The function symbols, segments and line tables of one ELF file.

    Symbols come from the file's `.symtab` when it has one; otherwise from a separate debug
    file found by build-id (/usr/lib/debug/.build-id/xx/yyyy.debug) or .gnu_debuglink; and
    only when neither exists from `.dynsym` (exported names only). Code bytes are always read
    from the file itself, because debug files carry no code.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        facts = elf_cache.cached("header", elf_cache.file_stamp(path),
                                 lambda: _parse_header(path), _header_valid)
        self.elf_type: str = facts["elf_type"]
        self.segments = [tuple(segment) for segment in facts["segments"]]
        self.interpreter: str | None = facts["interpreter"]
        self.build_id: str | None = facts["build_id"]
        self._debuglink: str | None = facts["debuglink"]
        self.soname: str | None = facts["soname"]
        self.needed: list[str] = facts["needed"]
        self.runpath: list[str] = facts["runpath"]
        self.rpath: list[str] = facts["rpath"]
        flags_1 = facts["flags_1"]
        self._has_dwarf: bool = facts["has_dwarf"]
        self.debug_file = self._find_debug_file()
        self.is_pie = self.elf_type == "ET_DYN" and bool(
            flags_1 & DF_1_PIE or (self.interpreter and not self.soname))
        self._table: list[Symbol] | None = None   # parsed on first use: libc's takes ~0.5 s
        self._lines: dict[str, dict[int, list[int]]] | None = None
        self._imports: frozenset[str] | None = None
        self._data: dict[int, bytes] = {}   # segment index -> its file bytes, read by `read`

    @staticmethod
    @functools.lru_cache(maxsize=256)
    def _cached(path: str, size: int, mtime: int) -> "ElfSymbols":
        return ElfSymbols(path)

    @classmethod
    def load(cls, path: str) -> "ElfSymbols":
        """The parsed file, shared by every caller while the file is unchanged on disk."""
        real = os.path.realpath(path)
        try:
            st = os.stat(real)
        except OSError as e:
            raise ElfFileError(f"cannot read {path}: {e.strerror}") from None
        return cls._cached(real, st.st_size, st.st_mtime_ns)

    def cache_key(self) -> list:
        """What identifies the bytes parsed here (stepper.elf_cache): this file and the debug
        file the symbols may come from."""
        return [self.build_id, elf_cache.file_identity(self.path),
                elf_cache.file_identity(self.debug_file)]

    def _load_symbols(self) -> None:
        rows = elf_cache.cached("symbols", self.cache_key(), self._parse_symbols, _symbol_rows)
        self._table = [Symbol(*row) for row in rows]
        self._by_name: dict[str, list[Symbol]] = {}
        for symbol in self._table:
            self._by_name.setdefault(symbol.name, []).append(symbol)
        self._values = [s.value for s in self._table]

    def _parse_symbols(self) -> list[list]:
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile
        symbols = None
        try:
            with open(self.path, "rb") as stream:
                elf = ELFFile(stream)
                symbols = elfread.function_symbols(elf, ".symtab")
                if symbols is None and self.debug_file:
                    symbols = elfread.read_debug_symbols(self.debug_file)
                if symbols is None:
                    symbols = elfread.function_symbols(elf, ".dynsym") or []
        except OSError as e:
            raise ElfFileError(f"cannot read {self.path}: {e.strerror}") from None
        except ELFError as e:
            raise ElfFileError(f"{self.path} is not a readable ELF file ({e})") from None
        table = sorted(set(symbols), key=lambda s: (s.value, preference(s)))
        return [[s.name, s.value, s.size, s.type, s.binding] for s in table]

    @property
    def imports(self) -> frozenset[str]:
        """Names the file needs from other objects (undefined .dynsym entries)."""
        if self._imports is None:
            def parse() -> list[str]:
                return sorted(self._with_elf(elfread.imports))
            self._imports = frozenset(elf_cache.cached(
                "imports", self.cache_key(), parse,
                lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v)))
        return self._imports

    def _with_elf(self, read):
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile
        try:
            with open(self.path, "rb") as stream:
                return read(ELFFile(stream))
        except OSError as e:
            raise ElfFileError(f"cannot read {self.path}: {e.strerror}") from None
        except ELFError as e:
            raise ElfFileError(f"{self.path} is not a readable ELF file ({e})") from None

    @property
    def _symbols(self) -> list[Symbol]:
        if self._table is None:
            self._load_symbols()
        return self._table

    def _find_debug_file(self) -> str | None:
        candidates = []
        if self.build_id and len(self.build_id) > 2:
            candidates.append(os.path.join(DEBUG_ROOT, ".build-id", self.build_id[:2],
                                           self.build_id[2:] + ".debug"))
        if self._debuglink:
            here = os.path.dirname(os.path.realpath(self.path))
            candidates += [os.path.join(here, self._debuglink),
                           os.path.join(here, ".debug", self._debuglink),
                           DEBUG_ROOT + os.path.join(here, self._debuglink)]
        return next((c for c in candidates
                     if os.path.isfile(c) and os.path.realpath(c) != os.path.realpath(self.path)),
                    None)

    # -- symbols ----------------------------------------------------------------------------

    def functions(self) -> list[Symbol]:
        """Every function symbol, sorted by address (aliases adjacent, preferred name first)."""
        return list(self._symbols)

    def lookup(self, name: str) -> list[Symbol]:
        """The symbols called exactly `name`: several when static functions of different
        compilation units share a name, none when the file has no such function."""
        self._symbols
        return list(self._by_name.get(name, ()))

    def variable(self, name: str) -> int | None:
        """Link-time address of a data symbol (such as the loader's `_r_debug`), or None.

        Data symbols are rarely needed, so they are read on demand rather than kept (and
        each answer is kept in stepper.elf_cache)."""
        found = elf_cache.cached("variable", self.cache_key() + [name],
                                 lambda: [self._parse_variable(name)],
                                 lambda v: len(v) == 1 and (v[0] is None or _is_int(v[0])))
        return found[0]

    def _parse_variable(self, name: str) -> int | None:
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile
        for path in (self.path, self.debug_file):
            if path is None:
                continue
            try:
                with open(path, "rb") as stream:
                    elf = ELFFile(stream)
                    for table in (".dynsym", ".symtab"):
                        section = elf.get_section_by_name(table)
                        if section is None or not hasattr(section, "get_symbol_by_name"):
                            continue
                        for sym in section.get_symbol_by_name(name) or ():
                            if sym["st_shndx"] != "SHN_UNDEF" and sym["st_value"]:
                                return sym["st_value"]
            except (OSError, ELFError):
                continue
        return None

    def at(self, value: int) -> list[Symbol]:
        """Every symbol at link-time address `value`, unsorted (`aliases` sorts them)."""
        return list(self._at(value))

    def aliases(self, value: int) -> list[Symbol]:
        """Every symbol at link-time address `value`, preferred name first."""
        return sorted((s for s in self._at(value)), key=preference)

    def _at(self, value: int) -> Iterator[Symbol]:
        self._symbols
        lo = bisect.bisect_left(self._values, value)
        while lo < len(self._symbols) and self._symbols[lo].value == value:
            yield self._symbols[lo]
            lo += 1

    def containing(self, vaddr: int) -> tuple[Symbol, int] | None:
        """The function whose [value, value+size) holds link-time address `vaddr`, and the
        offset into it; a size-0 label (hand-written assembly) reaches up to the next symbol.
        None outside every function. Binary search: the exit table asks once per probe.
        """
        self._symbols
        index = bisect.bisect_right(self._values, vaddr)
        if index == 0:
            return None
        group = list(self._at(self._values[index - 1]))
        inside = [s for s in group if vaddr < s.value + s.size]
        labels = [s for s in group if s.size == 0]
        chosen = inside or labels
        if not chosen:
            # A function may enclose smaller symbols (assembly): look a little further back.
            for symbol in reversed(self._symbols[max(0, index - 64):index]):
                if symbol.value <= vaddr < symbol.value + symbol.size:
                    chosen = [symbol]
                    break
        if not chosen:
            return None
        symbol = min(chosen, key=preference)
        return symbol, vaddr - symbol.value

    def describe(self, vaddr: int) -> str:
        """`name+0xOFF` (or `name`) for a link-time address, `0xADDR` outside every function."""
        hit = self.containing(vaddr)
        if hit is None:
            return f"{vaddr:#x}"
        symbol, offset = hit
        return symbol.name if offset == 0 else f"{symbol.name}+{offset:#x}"

    # -- code -------------------------------------------------------------------------------

    def is_code(self, vaddr: int) -> bool:
        """Whether link-time address `vaddr` lies in an executable PT_LOAD segment's file data."""
        return any(vaddr_ <= vaddr < vaddr_ + filesz and flags & 1
                   for vaddr_, _memsz, _off, filesz, flags, _align in self.segments)

    def read(self, vaddr: int, size: int) -> bytes:
        """The file bytes at link-time addresses [vaddr, vaddr+size), cut at the segment end."""
        for index, (seg_vaddr, _memsz, offset, filesz, _flags, _align) in \
                enumerate(self.segments):
            if seg_vaddr <= vaddr < seg_vaddr + filesz:
                size = min(size, seg_vaddr + filesz - vaddr)
                data = self._data.get(index)
                if data is None and filesz <= WHOLE_SEGMENT:
                    # read whole, once: the preflight reads thousands of sites
                    with open(self.path, "rb") as stream:
                        stream.seek(offset)
                        data = self._data[index] = stream.read(filesz)
                if data is not None:
                    return data[vaddr - seg_vaddr:vaddr - seg_vaddr + size]
                with open(self.path, "rb") as stream:
                    stream.seek(offset + vaddr - seg_vaddr)
                    return stream.read(size)
        return b""

    def bias_for_mapping(self, start: int, file_offset: int) -> int:
        """Load bias implied by a mapping of this file at `start` from `file_offset`.

        The segment holding that file offset says which link-time address the mapping's first
        page has; the bias is the difference. For a non-PIE executable it comes out as 0.
        """
        for vaddr, _memsz, offset, filesz, _flags, align in self.segments:
            page = offset - offset % 4096
            if page <= file_offset < offset + max(filesz, 1):
                return start - (vaddr - offset + file_offset)
        first = self.segments[0][0] if self.segments else 0
        return start - (first - first % 4096)

    # -- DWARF lines ------------------------------------------------------------------------

    @property
    def has_lines(self) -> bool:
        """Whether a DWARF line table exists, in the file or its separate debug file."""
        return self._has_dwarf or bool(self.debug_file and elfread.has_section(self.debug_file,
                                                                         ".debug_line"))

    def source_files(self) -> list[str]:
        """Every source path the line tables mention (as the compilation units spell them)."""
        return sorted(self._line_index())

    def lines(self, file: str, line: int) -> dict[str, list[int]]:
        """Statement-start addresses of `line` in every source file matching `file`.

        `file` matches a path by basename or by a trailing run of path components
        (`util.c`, `src/util.c`). The result maps each matching path to its sorted addresses
        (an empty list when that file has no code on that line).
        """
        index = self._line_index()
        return {path: sorted(set(index[path].get(line, ())))
                for path in index if path_matches(file, path)}

    def lines_with_code(self, path: str) -> list[int]:
        """The line numbers of `path` that have at least one statement start."""
        return sorted(self._line_index().get(path, {}))

    def _line_index(self) -> dict[str, dict[int, list[int]]]:
        if self._lines is None:
            source = self.path if self._has_dwarf else self.debug_file
            if source is None:
                self._lines = {}
            else:
                stored = elf_cache.cached("lines", self.cache_key(),
                                          lambda: _line_table(source), _line_rows_valid)
                self._lines = {path: {int(line): addresses for line, addresses in rows.items()}
                               for path, rows in stored.items()}
        return self._lines


def _parse_header(path: str) -> dict:
    """What the ELF header, program headers and dynamic section say (kept in
    stepper.elf_cache: parsing them with pyelftools costs more than the rest of a short run)."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    try:
        with open(path, "rb") as stream:
            elf = ELFFile(stream)
            if elf.elfclass != 64 or elf.header["e_machine"] != "EM_X86_64":
                raise ELFError(f"{elf.header['e_machine']} {elf.elfclass}-bit, not x86-64")
            dynamic = elfread.dynamic_tags(elf)
            return {
                "elf_type": elf.header["e_type"],
                "segments": [[s["p_vaddr"], s["p_memsz"], s["p_offset"], s["p_filesz"],
                              s["p_flags"], s["p_align"]]
                             for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"],
                "interpreter": elfread.interpreter(elf),
                "build_id": elfread.build_id(elf),
                "debuglink": elfread.debuglink(elf),
                "soname": dynamic.get("DT_SONAME", [None])[0],
                "needed": dynamic.get("DT_NEEDED", []),
                "runpath": elfread.split_paths(dynamic.get("DT_RUNPATH", [])),
                "rpath": elfread.split_paths(dynamic.get("DT_RPATH", [])),
                "flags_1": dynamic.get("DT_FLAGS_1", [0])[0],
                "has_dwarf": elf.get_section_by_name(".debug_line") is not None,
            }
    except OSError as e:
        raise ElfFileError(f"cannot read {path}: {e.strerror}") from None
    except ELFError as e:
        raise ElfFileError(f"{path} is not a readable ELF file ({e})") from None


def _optional_text(value) -> bool:
    return value is None or isinstance(value, str)


def _header_valid(facts) -> bool:
    """Whether a cached header entry is what `_parse_header` returns (else it is parsed)."""
    texts = lambda key: isinstance(facts[key], list) and all(  # noqa: E731
        isinstance(v, str) for v in facts[key])
    return (isinstance(facts, dict) and isinstance(facts["elf_type"], str)
            and isinstance(facts["segments"], list)
            and all(isinstance(seg, list) and len(seg) == 6 and all(map(_is_int, seg))
                    for seg in facts["segments"])
            and all(_optional_text(facts[k]) for k in ("interpreter", "build_id",
                                                        "debuglink", "soname"))
            and texts("needed") and texts("runpath") and texts("rpath")
            and _is_int(facts["flags_1"]) and isinstance(facts["has_dwarf"], bool))


def _line_table(source: str) -> dict[str, dict[str, list[int]]]:
    """{path: {line (as text, for JSON): [addresses]}} of every is_stmt row of `source`."""
    table: dict[str, dict[str, list[int]]] = {}
    for row in elfread.line_rows(source):
        table.setdefault(row.path, {}).setdefault(str(row.line), []).append(row.address)
    return table


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _symbol_rows(rows) -> bool:
    """Whether a cached symbol table is what `_parse_symbols` returns (else it is parsed)."""
    return isinstance(rows, list) and all(
        isinstance(r, list) and len(r) == 5 and isinstance(r[0], str) and _is_int(r[1])
        and _is_int(r[2]) and r[3] in ("FUNC", "IFUNC", "NOTYPE") and isinstance(r[4], str)
        for r in rows)


def _line_rows_valid(table) -> bool:
    return isinstance(table, dict) and all(
        isinstance(path, str) and isinstance(rows, dict) and all(
            line.isdigit() and isinstance(addresses, list) and all(map(_is_int, addresses))
            for line, addresses in rows.items())
        for path, rows in table.items())


def path_matches(pattern: str, path: str) -> bool:
    """Whether `pattern` names `path`: equal, same basename, or a suffix of whole components."""
    pattern = posixpath.normpath(pattern)
    path = posixpath.normpath(path)
    if pattern == path:
        return True
    if "/" not in pattern:
        return posixpath.basename(path) == pattern
    return path.endswith("/" + pattern.lstrip("/")) if not pattern.startswith("/") else False
