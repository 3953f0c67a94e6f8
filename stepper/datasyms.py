"""Data symbols (variables) of an ELF file: so that a probe spec naming a variable is told it
is one ("counter is a variable (in .data of prog), not a function") instead of "no function
is named counter". Read only when a spec has failed, so nothing here is cached across runs.
"""

from __future__ import annotations

import functools
import os

from . import demangle

__all__ = ["data_section", "variable_error"]


@functools.lru_cache(maxsize=256)
def data_section(path: str, name: str) -> str | None:
    """The section (`.data`, `.bss`, `.rodata`, ...) of the data object `name` (as written,
    or its demangled form) defined in `path`'s .symtab or .dynsym; None when there is none."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile   # here: most runs read no ELF file (elf_cache)

    try:
        with open(path, "rb") as stream:
            elf = ELFFile(stream)
            for table in (".symtab", ".dynsym"):
                section = elf.get_section_by_name(table)
                if section is None or not hasattr(section, "iter_symbols"):
                    continue
                for sym in section.iter_symbols():
                    if sym["st_info"]["type"] not in ("STT_OBJECT", "STT_TLS"):
                        continue
                    if not isinstance(sym["st_shndx"], int):
                        continue
                    if sym.name != name and demangle.base_name(
                            demangle.demangle(sym.name)) != name:
                        continue
                    return elf.get_section(sym["st_shndx"]).name
    except (OSError, ELFError):
        return None
    return None


def variable_error(text: str, name: str, paths: list[str]) -> str | None:
    """The message for probe spec `text` when `name` is a data symbol of one of `paths`."""
    for path in paths:
        section = data_section(path, name)
        if section is not None:
            return (f"probe spec {text!r}: {name} is a variable (in {section} of "
                    f"{os.path.basename(path)}), not a function")
    return None
