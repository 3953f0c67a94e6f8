"""Reading ELF files with pyelftools: the records and table readers stepper.symbols builds on,
and the one test of whether a file is an ELF object (`is_elf`, `looks_like_elf`).

Nothing here caches or decides: stepper.symbols owns the per-file view (which table wins,
aliases, lookups); this module only turns sections into plain records.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

if TYPE_CHECKING:  # pragma: no cover - pyelftools is imported where a file is parsed
    from elftools.elf.elffile import ELFFile

ELF_MAGIC = b"\x7fELF"
STT_GNU_IFUNC = "STT_LOOS"   # pyelftools names type 10 (STT_GNU_IFUNC) after STT_LOOS
_FUNCTION_TYPES = {"STT_FUNC": "FUNC", STT_GNU_IFUNC: "IFUNC"}


def looks_like_elf(header: bytes, x86_64: bool = False) -> bool:
    """Whether `header` (a file's first bytes) starts an ELF object; with `x86_64`, a 64-bit
    x86-64 one (EI_CLASS 2, e_machine 62), which needs the first 20 bytes.

    Why one function: the loader search, the process map reader and the corpus harvester must
    agree on what counts as an ELF file."""
    if not header.startswith(ELF_MAGIC):
        return False
    return not x86_64 or (len(header) >= 20 and header[4] == 2
                          and header[18:20] == b"\x3e\x00")


def is_elf(path: str, x86_64: bool = False) -> bool:
    """`looks_like_elf` for the file at `path`; False when it cannot be read."""
    try:
        with open(path, "rb") as stream:
            return looks_like_elf(stream.read(20), x86_64)
    except OSError:
        return False


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


@dataclass(frozen=True)
class LineRow:
    """A statement start from a DWARF line table: `path` is the source file as the CU names it."""

    path: str
    line: int
    address: int


# -- tables --------------------------------------------------------------------------------------

def function_symbols(elf: ELFFile, section_name: str) -> list[Symbol] | None:
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


def read_debug_symbols(path: str) -> list[Symbol] | None:
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    try:
        with open(path, "rb") as stream:
            return function_symbols(ELFFile(stream), ".symtab")
    except (OSError, ELFError):
        return None


def has_section(path: str, name: str) -> bool:
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    try:
        with open(path, "rb") as stream:
            return ELFFile(stream).get_section_by_name(name) is not None
    except (OSError, ELFError):
        return False


def imports(elf: ELFFile) -> frozenset[str]:
    """Names the file needs from other objects (undefined .dynsym entries)."""
    section = elf.get_section_by_name(".dynsym")
    if section is None or not hasattr(section, "iter_symbols"):
        return frozenset()
    return frozenset(s.name for s in section.iter_symbols()
                     if s["st_shndx"] == "SHN_UNDEF" and s.name)


def dynamic_tags(elf: ELFFile) -> dict[str, list]:
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


def split_paths(values: list[str]) -> list[str]:
    return [p for v in values for p in v.split(":") if p]


def interpreter(elf: ELFFile) -> str | None:
    for segment in elf.iter_segments():
        if segment["p_type"] == "PT_INTERP":
            return segment.get_interp_name()
    return None


def build_id(elf: ELFFile) -> str | None:
    for section in elf.iter_sections():
        if section["sh_type"] == "SHT_NOTE":
            for note in section.iter_notes():
                if note["n_type"] == "NT_GNU_BUILD_ID":
                    return note["n_desc"]
    return None


def debuglink(elf: ELFFile) -> str | None:
    section = elf.get_section_by_name(".gnu_debuglink")
    if section is None:
        return None
    return section.data().split(b"\0", 1)[0].decode(errors="replace") or None


def line_rows(path: str) -> Iterable[LineRow]:
    """Every is_stmt row of every line program of `path` (DWARF 2 to 5)."""
    from elftools.elf.elffile import ELFFile
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
        # DWARF 5's directory 0 is the compilation directory itself (relative in Debian's
        # builds, "./malloc"): joining it to DW_AT_comp_dir again would double it
        if directory and not directory.startswith("/") and comp_dir and \
                not (version >= 5 and dir_index == 0):
            directory = posixpath.join(comp_dir, directory)
        paths[index] = posixpath.normpath(posixpath.join(directory, _text(entry["name"])))
    return paths


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
