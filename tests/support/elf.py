"""Symbols and instructions of a built tracee, read from its file (pyelftools + emu.decode)."""

from __future__ import annotations

from elftools.elf.elffile import ELFFile

import emu


def symbol(exe: str, name: str) -> tuple[int, int]:
    """(address as nm prints it, size) of symbol `name` in `exe`."""
    with open(exe, "rb") as f:
        for sym in ELFFile(f).get_section_by_name(".symtab").iter_symbols():
            if sym.name == name:
                return sym["st_value"], sym["st_size"]
    raise KeyError(name)


def instructions(exe: str, function: str) -> list[emu.Instruction]:
    """Every instruction of `function`, decoded from the file (link-time addresses)."""
    address, size = symbol(exe, function)
    with open(exe, "rb") as f:
        elf = ELFFile(f)
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_LOAD" and seg["p_vaddr"] <= address < seg["p_vaddr"] + seg["p_filesz"]:
                f.seek(seg["p_offset"] + address - seg["p_vaddr"])
                code = f.read(size)
                break
        else:
            raise KeyError(function)
    result, pc = [], address
    while pc < address + size:
        insn = emu.decode(code[pc - address:], pc)
        result.append(insn)
        pc = insn.next_address
    return result
