"""What object and function a run-time address belongs to: /proc/PID/maps (stepper.maps)
read together with the mapped ELF files (stepper.symbols).

A module of its own so that the maps parser stays below the ELF reader: breakpoints name the
function they sit in, and the engine needs the PIE load bias of the main executable.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import maps
from .symbols import ElfFileError, ElfSymbols


@dataclass(frozen=True)
class Symbol:
    """A function symbol (or assembly label) located at its run-time address."""

    name: str
    address: int
    size: int
    object: str  # path of the mapped file


def _elf(path: str):
    try:
        return ElfSymbols.load(path)
    except ElfFileError:
        return None


def load_bias(mapping: maps.Mapping) -> int | None:
    """Run-time address minus link-time address for the file mapped by `mapping`."""
    elf = _elf(mapping.path) if mapping.is_file else None
    return None if elf is None else elf.bias_for_mapping(mapping.start, mapping.offset)


def main_bias(pid: int, exe: str) -> int:
    """Load bias of the main executable `exe` (0 unless it is position-independent)."""
    elf = _elf(exe)
    if elf is None or elf.elf_type != "ET_DYN":
        return 0
    mine = maps.of_file(maps.read(pid), exe)
    if not mine:
        return 0
    return load_bias(min(mine, key=lambda m: m.start)) or 0


def containing_symbol(mappings: list[maps.Mapping], address: int,
                      elves: dict | None = None) -> Symbol | None:
    """The function symbol of the mapped file whose extent contains run-time `address`.
    `elves` (path -> its ElfSymbols or None), when given, keeps each file found once: a batch
    of probes asks thousands of times about the same few files."""
    m = maps.find(mappings, address)
    if m is None or not m.is_file:
        return None
    if elves is None:
        elf = _elf(m.path)
    else:
        elf = elves[m.path] if m.path in elves else elves.setdefault(m.path, _elf(m.path))
    bias = None if elf is None else elf.bias_for_mapping(m.start, m.offset)
    if bias is None:
        return None
    hit = elf.containing(address - bias)
    if hit is None:
        return None
    symbol, _ = hit
    return Symbol(symbol.name, symbol.value + bias, symbol.size, m.path)
