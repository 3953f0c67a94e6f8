"""/proc/PID/maps parsed into Mapping records, and the questions stepper asks of them.

Why a module: breakpoint validation (is the address executable?), the PIE load bias, symbol
lookup (which file, at what bias), XOL area placement and the loaded-object list of
stepper.symbols all read the same table, so it is parsed here and nowhere else. It reads no
ELF file: what a run-time address means in its object is stepper.located's question.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass


@dataclass(frozen=True)
class Mapping:
    start: int
    end: int
    perms: str
    offset: int
    path: str

    @property
    def executable(self) -> bool:
        return "x" in self.perms

    @property
    def readable(self) -> bool:
        return "r" in self.perms

    @property
    def is_file(self) -> bool:
        return self.path.startswith("/")

    def __contains__(self, address: int) -> bool:
        return self.start <= address < self.end


def parse(text: str) -> list[Mapping]:
    """Parse the text of a maps file (one mapping per line, sorted by address).

    The path is everything after the inode, kept exactly as the kernel prints it: it may hold
    spaces, even trailing ones (the kernel escapes only newlines), and may end in " (deleted)"
    or be a pseudo-path such as [heap] or [vdso]; anonymous mappings get "".
    """
    result = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        lo, hi = parts[0].split("-")
        path = parts[5] if len(parts) > 5 else ""
        result.append(Mapping(int(lo, 16), int(hi, 16), parts[1], int(parts[2], 16), path))
    return result


def read(pid: int) -> list[Mapping]:
    """The current mappings of process `pid`."""
    with open(f"/proc/{pid}/maps") as f:
        return parse(f.read())


def find(mappings: list[Mapping], address: int) -> Mapping | None:
    """The mapping containing `address`, or None."""
    starts = [m.start for m in mappings]
    i = bisect.bisect_right(starts, address) - 1
    if i >= 0 and address in mappings[i]:
        return mappings[i]
    return None


def of_file(mappings: list[Mapping], path: str) -> list[Mapping]:
    """Every mapping of the file `path` (compared as given by the kernel: absolute, resolved)."""
    return [m for m in mappings if m.path == path]
