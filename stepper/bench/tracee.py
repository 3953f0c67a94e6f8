"""The bundled benchmark programs: the tracee (one build per probed-instruction variant) and
the C floor tracer, compiled with gcc on first use into the cache (stepper.toolchain)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import emu
from elftools.elf.elffile import ELFFile

from .. import toolchain
from ..errors import StepperError

#: Variant name -> the -D macro of bench_tracee.c choosing the first instruction of `probed`.
#: push_rbp comes first: it is the instruction of the headline figures (per_hit_us).
VARIANTS: dict[str, str] = {
    "push_rbp": "BENCH_PUSH",
    "mov": "BENCH_MOV",
    "sub_rsp": "BENCH_SUB",
    "rip_relative": "BENCH_RIPREL",
    "declined": "BENCH_SSE",
    "undefined_flags": "BENCH_IMUL",
}
HEADLINE = "push_rbp"
#: Variants whose probed instruction stores to memory (the emulated hit's extra system call).
STORES = frozenset({"push_rbp"})
#: Variants that load from memory (one system call, process_vm_readv, per emulated hit): the
#: bench breaks their hit down too.
LOADS = frozenset({"rip_relative"})


@dataclass(frozen=True)
class Tracee:
    """One built variant: where `probed` (the probe site) and the XOL scratch slot are, and
    the probed instruction's text. Built -no-pie, so file addresses are run-time addresses."""

    variant: str
    path: Path
    probe: int
    slot: int
    instruction: str

    @property
    def stores(self) -> bool:
        return self.variant in STORES

    def argv(self, iterations: int) -> list[str]:
        return [str(self.path), str(iterations)]


@lru_cache(maxsize=None)
def tracee(variant: str) -> Tracee:
    """Build (once, cached on disk) and describe the tracee of `variant`."""
    if variant not in VARIANTS:
        raise StepperError(f"unknown bench variant {variant!r}: choose one of {', '.join(VARIANTS)}")
    path = toolchain.build("bench_tracee.c", ("-O2", "-no-pie", f"-D{VARIANTS[variant]}"),
                           output=f"bench_tracee_{variant}")
    probe, slot = symbol_values(path, "probed", "bench_slot")
    code = _read(path, probe, 15)
    return Tracee(variant, path, probe, slot, emu.decode(code, probe).text)


@lru_cache(maxsize=None)
def floor() -> Path:
    """The C floor tracer (bench_floor.c)."""
    return toolchain.build("bench_floor.c", ("-O2",), output="bench_floor")


def symbol_values(path: Path, *names: str) -> tuple[int, ...]:
    with open(path, "rb") as f:
        elf = ELFFile(f)
        table = elf.get_section_by_name(".symtab")
        found = {s.name: s["st_value"] for s in table.iter_symbols() if s.name in names}
    missing = [n for n in names if n not in found]
    if missing:
        raise StepperError(f"{path}: symbol(s) {', '.join(missing)} missing from the bench tracee")
    return tuple(found[n] for n in names)


def _read(path: Path, address: int, size: int) -> bytes:
    """`size` bytes of the file's code at virtual `address`."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        for seg in elf.iter_segments("PT_LOAD"):
            start = seg["p_vaddr"]
            if start <= address < start + seg["p_filesz"]:
                offset = address - start
                return seg.data()[offset:offset + size]
    raise StepperError(f"{path}: {address:#x} is in no loaded segment")
