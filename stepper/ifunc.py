"""IFUNC symbols (STT_GNU_IFUNC): probe the implementations a resolver can pick, not the resolver.

glibc's `strlen`, `memcpy` and friends are IFUNCs: the symbol's address is a *resolver* that the
dynamic loader runs once, while relocating, to choose an implementation for this CPU
(`__strlen_avx2`, `__strlen_evex`, `__strlen_sse2`...). A breakpoint on the resolver is hit
once per process at best, and before any probe is inserted: never what "probe strlen" means.

Which implementation the resolver returns depends on the CPU and can only be known after the
object is relocated, which is too late for calls made by the libraries' constructors. So a probe
on an IFUNC becomes a probe on *every* implementation the resolver can return: the resolver is
decoded from its symbol's start to its end, and every RIP-relative `lea` that yields the start of
a function of the same object is a candidate (this is how gcc compiles glibc's selectors:
`lea rdx, [rip + __strlen_avx2]` ... `ret`). Calls reach a probe whichever one the CPU picks;
the implementation in use is the one whose probe counts hits. This is static and deterministic:
nothing is run in the program to find out.
"""

from __future__ import annotations

import weakref

from capstone import x86_const as X

import emu

from . import elf_cache
from .symbols import ElfSymbols, Symbol, preference

MAX_RESOLVER_SIZE = 4096


def is_ifunc(symbols: ElfSymbols, vaddr: int) -> bool:
    """Whether link-time address `vaddr` is the start of an IFUNC symbol of `symbols`."""
    return any(s.type == "IFUNC" for s in symbols.at(vaddr))


def implementations(symbols: ElfSymbols, vaddr: int) -> list[Symbol]:
    """The function symbols the IFUNC resolver at `vaddr` can return, preferred alias each,
    sorted by address; [] when none is found (the caller then keeps the resolver)."""
    if not is_ifunc(symbols, vaddr):
        return []
    found: dict[int, Symbol] = {}
    for target in _resolvers(symbols).get(vaddr, ()):
        named = [s for s in symbols.aliases(target) if s.type != "IFUNC"]
        if named:
            found.setdefault(target, min(named, key=preference))
    return [found[a] for a in sorted(found)]


_RESOLVERS: "weakref.WeakKeyDictionary[ElfSymbols, dict[int, list[int]]]" = \
    weakref.WeakKeyDictionary()


def _resolvers(symbols: ElfSymbols) -> dict[int, list[int]]:
    """Every IFUNC resolver of the file -> the code addresses it computes with a RIP-relative
    `lea`: decoded once per file, and kept on disk (stepper.elf_cache) for the next run."""
    known = _RESOLVERS.get(symbols)
    if known is None:
        def compute() -> dict[str, list[int]]:
            return {str(value): _targets(symbols, value)
                    for value in sorted({s.value for s in symbols.functions()
                                         if s.type == "IFUNC"})}

        def valid(table) -> bool:
            return isinstance(table, dict) and all(
                key.isdigit() and isinstance(targets, list)
                and all(isinstance(t, int) and not isinstance(t, bool) for t in targets)
                for key, targets in table.items())
        stored = elf_cache.cached("ifunc", symbols.cache_key(), compute, valid)
        known = _RESOLVERS[symbols] = {int(key): targets for key, targets in stored.items()}
    return known


def _targets(symbols: ElfSymbols, vaddr: int) -> list[int]:
    resolver = next((s for s in symbols.aliases(vaddr) if s.type == "IFUNC"), None)
    size = (resolver.size if resolver else 0) or MAX_RESOLVER_SIZE
    code = symbols.read(vaddr, min(size, MAX_RESOLVER_SIZE))
    return [t for t in _lea_targets(code, vaddr) if t != vaddr and symbols.is_code(t)]


def _lea_targets(code: bytes, address: int) -> list[int]:
    """Addresses computed by RIP-relative `lea` instructions in `code` (decoded linearly)."""
    targets = []
    position = 0
    while position < len(code):
        try:
            insn = emu.decode(code[position:], address + position)
        except emu.DecodeError:
            break
        position += insn.length
        if insn.mnemonic == "lea" and insn.rip_relative:
            for op in insn.capstone.operands:
                if op.type == X.X86_OP_MEM and op.mem.base == X.X86_REG_RIP:
                    targets.append(insn.next_address + op.mem.disp)
    return targets
