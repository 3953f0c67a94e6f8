"""ELF function symbols, DWARF line tables and load biases: the facts probe specs resolve against.

Everything here reads files (with pyelftools) and /proc/PID/maps (through stepper.maps);
nothing here touches a tracee. A file is parsed once per process run (`ElfSymbols.load` caches
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
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from . import maps
from .errors import StepperError

DEBUG_ROOT = "/usr/lib/debug"
STT_GNU_IFUNC = "STT_LOOS"   # pyelftools names type 10 (STT_GNU_IFUNC) after STT_LOOS
_FUNCTION_TYPES = {"STT_FUNC": "FUNC", STT_GNU_IFUNC: "IFUNC"}
_BINDING_RANK = {"GLOBAL": 0, "WEAK": 1, "LOCAL": 2}
DF_1_PIE = 0x08000000


class ElfFileError(StepperError):
    """A file that should be an x86-64 ELF object cannot be read as one."""


@dataclass(frozen=True)
class Symbol:
    """One function symbol of one file. `value` is the link-time address (what `nm` prints).

    `type` is FUNC, IFUNC (the address is the resolver that picks an implementation, not the
    implementation) or NOTYPE (a label in an executable section, as hand-written assembly has).
    """

    name: str
    value: int
    size: int
    type: str
    binding: str

    @property
    def exported(self) -> bool:
        """Whether other objects can bind to it by name, which is what a plain name means."""
        return self.binding in ("GLOBAL", "WEAK")


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


@dataclass(frozen=True)
class LineRow:
    """A statement start from a DWARF line table: `path` is the source file as the CU names it."""

    path: str
    line: int
    address: int


class ElfSymbols:
    """The function symbols, segments and line tables of one ELF file.

    Symbols come from the file's `.symtab` when it has one; otherwise from a separate debug
    file found by build-id (/usr/lib/debug/.build-id/xx/yyyy.debug) or .gnu_debuglink; and
    only when neither exists from `.dynsym` (exported names only). Code bytes are always read
    from the file itself, because debug files carry no code.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            with open(path, "rb") as stream:
                elf = ELFFile(stream)
                self._check_machine(elf)
                self.elf_type: str = elf.header["e_type"]
                self.segments = [(s["p_vaddr"], s["p_memsz"], s["p_offset"], s["p_filesz"],
                                  s["p_flags"], s["p_align"])
                                 for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
                self.interpreter = _interpreter(elf)
                dynamic = _dynamic_tags(elf)
                self.build_id = _build_id(elf)
                self._debuglink = _debuglink(elf)
                self.soname: str | None = dynamic.get("DT_SONAME", [None])[0]
                self.needed: list[str] = dynamic.get("DT_NEEDED", [])
                self.runpath: list[str] = _split_paths(dynamic.get("DT_RUNPATH", []))
                self.rpath: list[str] = _split_paths(dynamic.get("DT_RPATH", []))
                flags_1 = dynamic.get("DT_FLAGS_1", [0])[0]
                self.imports: frozenset[str] = _imports(elf)
                self._has_dwarf = elf.get_section_by_name(".debug_line") is not None
                self.debug_file = self._find_debug_file()
        except OSError as e:
            raise ElfFileError(f"cannot read {path}: {e.strerror}") from None
        except ELFError as e:
            raise ElfFileError(f"{path} is not a readable ELF file ({e})") from None
        self.is_pie = self.elf_type == "ET_DYN" and bool(
            flags_1 & DF_1_PIE or (self.interpreter and not self.soname))
        self._table: list[Symbol] | None = None   # parsed on first use: libc's takes ~0.5 s
        self._lines: dict[str, dict[int, list[int]]] | None = None

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

    @staticmethod
    def _check_machine(elf: ELFFile) -> None:
        if elf.elfclass != 64 or elf.header["e_machine"] != "EM_X86_64":
            raise ELFError(f"{elf.header['e_machine']} {elf.elfclass}-bit, not x86-64")

    def _load_symbols(self) -> None:
        symbols = None
        try:
            with open(self.path, "rb") as stream:
                elf = ELFFile(stream)
                symbols = _function_symbols(elf, ".symtab")
                if symbols is None and self.debug_file:
                    symbols = _read_debug_symbols(self.debug_file)
                if symbols is None:
                    symbols = _function_symbols(elf, ".dynsym") or []
        except OSError as e:
            raise ElfFileError(f"cannot read {self.path}: {e.strerror}") from None
        except ELFError as e:
            raise ElfFileError(f"{self.path} is not a readable ELF file ({e})") from None
        self._table = sorted(set(symbols), key=lambda s: (s.value, preference(s)))
        self._by_name: dict[str, list[Symbol]] = {}
        for symbol in self._table:
            self._by_name.setdefault(symbol.name, []).append(symbol)
        self._values = [s.value for s in self._table]

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

        Data symbols are rarely needed, so they are read on demand rather than kept."""
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
        for seg_vaddr, _memsz, offset, filesz, _flags, _align in self.segments:
            if seg_vaddr <= vaddr < seg_vaddr + filesz:
                size = min(size, seg_vaddr + filesz - vaddr)
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
        return self._has_dwarf or bool(self.debug_file and _has_section(self.debug_file,
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
            self._lines = {}
            if source is not None:
                for row in _line_rows(source):
                    self._lines.setdefault(row.path, {}).setdefault(row.line, []).append(
                        row.address)
        return self._lines


def path_matches(pattern: str, path: str) -> bool:
    """Whether `pattern` names `path`: equal, same basename, or a suffix of whole components."""
    pattern = posixpath.normpath(pattern)
    path = posixpath.normpath(path)
    if pattern == path:
        return True
    if "/" not in pattern:
        return posixpath.basename(path) == pattern
    return path.endswith("/" + pattern.lstrip("/")) if not pattern.startswith("/") else False


# -- reading the ELF file ---------------------------------------------------------------------

def _function_symbols(elf: ELFFile, section_name: str) -> list[Symbol] | None:
    """Function symbols of one symbol table; None when the file has no such table."""
    section = elf.get_section_by_name(section_name)
    if section is None or not hasattr(section, "iter_symbols"):
        return None
    executable = {i for i, s in enumerate(elf.iter_sections()) if s["sh_flags"] & 0x4}
    versions = _version_names(elf) if section_name == ".dynsym" else None
    found = []
    for index, sym in enumerate(section.iter_symbols()):
        kind = _FUNCTION_TYPES.get(sym["st_info"]["type"])
        shndx = sym["st_shndx"]
        if kind is None:
            if sym["st_info"]["type"] != "STT_NOTYPE" or shndx not in executable:
                continue
            kind = "NOTYPE"
        if shndx == "SHN_UNDEF" or not sym.name or sym["st_value"] == 0:
            continue
        name = _plain_name(sym.name)
        if versions is not None:
            name = versions(index, name)
        if name is None:
            continue
        found.append(Symbol(name=name, value=sym["st_value"], size=sym["st_size"], type=kind,
                            binding=sym["st_info"]["bind"].removeprefix("STB_")))
    return found


def _plain_name(name: str) -> str:
    """`f@@V` is the default version, reached by the plain name; `f@V` keeps its suffix."""
    base, sep, version = name.partition("@@")
    return base if sep else name


def _version_names(elf: ELFFile) -> Callable[[int, str], str]:
    """For .dynsym: a function naming hidden (non-default) versions `name@VERSION`."""
    versym = elf.get_section_by_name(".gnu.version")
    verdef = elf.get_section_by_name(".gnu.version_d")
    if versym is None or verdef is None:
        return lambda index, name: name
    names: dict[int, str] = {}
    for version, auxiliaries in verdef.iter_versions():
        aux = next(iter(auxiliaries), None)
        if aux is not None:
            names[version.entry["vd_ndx"]] = aux.name

    def name_of(index: int, name: str) -> str:
        ndx = versym.get_symbol(index).entry["ndx"]
        if isinstance(ndx, str) or not ndx & 0x8000:
            return name
        return f"{name}@{names.get(ndx & 0x7FFF, '?')}"
    return name_of


def _read_debug_symbols(path: str) -> list[Symbol] | None:
    try:
        with open(path, "rb") as stream:
            return _function_symbols(ELFFile(stream), ".symtab")
    except (OSError, ELFError):
        return None


def _has_section(path: str, name: str) -> bool:
    try:
        with open(path, "rb") as stream:
            return ELFFile(stream).get_section_by_name(name) is not None
    except (OSError, ELFError):
        return False


def _imports(elf: ELFFile) -> frozenset[str]:
    """Names the file needs from other objects (undefined .dynsym entries)."""
    section = elf.get_section_by_name(".dynsym")
    if section is None or not hasattr(section, "iter_symbols"):
        return frozenset()
    return frozenset(s.name for s in section.iter_symbols()
                     if s["st_shndx"] == "SHN_UNDEF" and s.name)


def _dynamic_tags(elf: ELFFile) -> dict[str, list]:
    tags: dict[str, list] = {}
    section = elf.get_section_by_name(".dynamic")
    if section is None or not hasattr(section, "iter_tags"):
        return tags
    for tag in section.iter_tags():
        kind = tag.entry.d_tag
        if kind == "DT_NEEDED":
            value = tag.needed
        elif kind == "DT_SONAME":
            value = tag.soname
        elif kind == "DT_RUNPATH":
            value = tag.runpath
        elif kind == "DT_RPATH":
            value = tag.rpath
        else:
            value = tag.entry.d_val
        tags.setdefault(kind, []).append(value)
    return tags


def _split_paths(values: list[str]) -> list[str]:
    return [p for v in values for p in v.split(":") if p]


def _interpreter(elf: ELFFile) -> str | None:
    for segment in elf.iter_segments():
        if segment["p_type"] == "PT_INTERP":
            return segment.get_interp_name()
    return None


def _build_id(elf: ELFFile) -> str | None:
    for section in elf.iter_sections():
        if section["sh_type"] == "SHT_NOTE":
            for note in section.iter_notes():
                if note["n_type"] == "NT_GNU_BUILD_ID":
                    return note["n_desc"]
    return None


def _debuglink(elf: ELFFile) -> str | None:
    section = elf.get_section_by_name(".gnu_debuglink")
    if section is None:
        return None
    return section.data().split(b"\0", 1)[0].decode(errors="replace") or None


def _line_rows(path: str) -> Iterable[LineRow]:
    """Every is_stmt row of every line program of `path` (DWARF 2 to 5)."""
    with open(path, "rb") as stream:
        elf = ELFFile(stream)
        if not elf.has_dwarf_info():
            return []
        dwarf = elf.get_dwarf_info()
        rows = []
        for cu in dwarf.iter_CUs():
            program = dwarf.line_program_for_CU(cu)
            if program is None:
                continue
            paths = _file_paths(program, cu)
            for entry in program.get_entries():
                state = entry.state
                if state is None or state.end_sequence or not state.is_stmt or state.line == 0:
                    continue
                path = paths.get(state.file)
                if path is not None:
                    rows.append(LineRow(path, state.line, state.address))
        return rows


def _file_paths(program, cu) -> dict[int, str]:
    """File index -> path for one line program: DWARF 5 counts from 0, earlier from 1."""
    header = program.header
    version = header["version"]
    top = cu.get_top_DIE()
    comp_dir_attr = top.attributes.get("DW_AT_comp_dir")
    comp_dir = _text(comp_dir_attr.value) if comp_dir_attr else ""
    dirs = [_text(d) for d in header["include_directory"]]
    paths = {}
    for i, entry in enumerate(header["file_entry"]):
        index = i if version >= 5 else i + 1
        dir_index = entry["dir_index"]
        if version >= 5:
            directory = dirs[dir_index] if dir_index < len(dirs) else ""
        else:
            directory = comp_dir if dir_index == 0 else (
                dirs[dir_index - 1] if dir_index - 1 < len(dirs) else "")
        if directory and not directory.startswith("/") and comp_dir:
            directory = posixpath.join(comp_dir, directory)
        paths[index] = posixpath.normpath(posixpath.join(directory, _text(entry["name"])))
    return paths


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


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


def _is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as stream:
            return stream.read(4) == b"\x7fELF"
    except OSError:
        return False


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
        if not _is_elf(path):
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
