"""USDT (SystemTap SDT) probes: the `.note.stapsdt` notes of an ELF file, their arguments,
`usdt:[OBJECT:]PROVIDER:NAME` specs, and the semaphores that switch probes on.

docs/usdt.md has the facts relied on here: the note layout, the `.stapsdt.base` (prelink)
adjustment, the argument strings (`size@operand`, AT&T syntax) and the semaphore rule (a
16-bit counter the program reads to decide whether to compute its probe arguments; a tracer
adds one while it probes the site and takes it back at detach).

A probe site is a single `nop` (sdt.h's `_SDT_NOP`), which the emulator steps (RIP += 1).
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import struct
from dataclasses import dataclass
from typing import Callable, Mapping

from .errors import StepperError

__all__ = ["Arg", "Note", "UsdtError", "notes", "parse_args", "parse_usdt_spec",
           "usdt_sites", "usdt_probes", "note_at"]

NT_STAPSDT = 3


class UsdtError(StepperError):
    """A USDT note, argument or semaphore that cannot be used; the message names it."""


# -- arguments --------------------------------------------------------------------------------

_REGS64 = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp"] + [f"r{n}" for n in
                                                                       range(8, 16)]
#: Every x86-64 general register name an operand may use: (full register, bytes, shift).
_SUBREGS: dict[str, tuple[str, int, int]] = {"rip": ("rip", 8, 0)}
for _full in _REGS64:
    _SUBREGS[_full] = (_full, 8, 0)
    if _full[1:].isdigit():
        _SUBREGS[_full + "d"], _SUBREGS[_full + "w"], _SUBREGS[_full + "b"] = (
            (_full, 4, 0), (_full, 2, 0), (_full, 1, 0))
    else:
        core = _full[1:]
        _SUBREGS["e" + core] = (_full, 4, 0)
        _SUBREGS[core] = (_full, 2, 0)
        if core in ("ax", "bx", "cx", "dx"):
            _SUBREGS[core[0] + "l"], _SUBREGS[core[0] + "h"] = (_full, 1, 0), (_full, 1, 8)
        else:
            _SUBREGS[core + "l"] = (_full, 1, 0)

_OPERAND = re.compile(
    r"^(?:\$(?P<imm>-?(?:0x[0-9a-fA-F]+|\d+))"
    r"|%(?P<reg>[a-z0-9]+)"
    r"|(?P<disp>[-+]?(?:0x[0-9a-fA-F]+|\d+))?(?P<sym>[A-Za-z_.$][\w.$@]*)?(?P<off>[-+]\d+)?"
    r"\((?:%(?P<base>[a-z0-9]+))?(?:,%(?P<index>[a-z0-9]+)(?:,(?P<scale>[1248]))?)?\))$")


@dataclass(frozen=True)
class Arg:
    """One USDT argument: `size` in bytes, `signed`, and where the value is at the site.

    `kind` is "imm" (`value`), "reg" (`reg`) or "mem": the address is disp + base + index *
    scale (+ the runtime address of `symbol` when the operand names one, as `sym(%rip)`)."""

    text: str
    size: int
    signed: bool
    kind: str
    value: int = 0
    reg: str | None = None
    base: str | None = None
    index: str | None = None
    scale: int = 1
    symbol: str | None = None

    def read(self, regs: Mapping[str, int], memory: Callable[[int, int], bytes],
             symbol_address: Callable[[str], int] | None = None) -> int:
        """The argument's value at the probe site, from the thread's registers (user_regs
        names: rax, ..., r15, rip, where rip is the address of the site's nop) and a memory
        reader `memory(address, size) -> bytes`; sized and sign-extended as declared."""
        if self.kind == "imm":
            raw = self.value
        elif self.kind == "reg":
            raw = _register(regs, self.reg)
        else:
            address = self.value
            if self.base == "rip":
                # %rip in an operand is the address of the next instruction: the 1-byte nop
                address += regs["rip"] + 1
            elif self.base:
                address += _register(regs, self.base)
            if self.index:
                address += _register(regs, self.index) * self.scale
            if self.symbol:
                if symbol_address is None:
                    raise UsdtError(f"USDT argument {self.text!r} names symbol {self.symbol}: "
                                    "give symbol_address to read it")
                address += symbol_address(self.symbol) - (regs["rip"] + 1
                                                           if self.base == "rip" else 0)
            data = memory(address & (1 << 64) - 1, self.size)
            if len(data) != self.size:
                raise UsdtError(f"USDT argument {self.text!r}: cannot read {self.size} bytes "
                                f"at {address:#x}")
            raw = int.from_bytes(data, "little")
        raw &= (1 << 8 * self.size) - 1
        if self.signed and raw >> (8 * self.size - 1):
            raw -= 1 << 8 * self.size
        return raw


def _register(regs: Mapping[str, int], name: str) -> int:
    full, size, shift = _SUBREGS[name]
    return (regs[full] >> shift) & ((1 << 8 * size) - 1)


def parse_args(text: str) -> tuple[Arg, ...]:
    """The arguments of a note's argument string (`-4@%edi 8@-16(%rbp) 4@$5`).

    An argument without `size@` (old sdt.h) is taken as 8 bytes signed, as gdb does."""
    result = []
    for word in text.split():
        size_text, at, operand = word.partition("@")
        if not at or not re.fullmatch(r"-?[1248]", size_text):
            size_text, operand = "-8", word
        size = int(size_text)
        found = _OPERAND.match(operand)
        if found is None:
            raise UsdtError(f"USDT argument {word!r}: operand {operand!r} is not understood")
        if found["reg"] and found["reg"] not in _SUBREGS or any(
                found[g] and found[g] not in _SUBREGS for g in ("base", "index")):
            raise UsdtError(f"USDT argument {word!r}: unknown register")
        common = dict(text=word, size=abs(size), signed=size < 0)
        if found["imm"] is not None:
            result.append(Arg(kind="imm", value=int(found["imm"], 0), **common))
        elif found["reg"]:
            result.append(Arg(kind="reg", reg=found["reg"], **common))
        else:
            disp = int(found["disp"], 0) if found["disp"] else 0
            disp += int(found["off"]) if found["off"] else 0
            result.append(Arg(kind="mem", value=disp, base=found["base"], index=found["index"],
                              scale=int(found["scale"] or 1), symbol=found["sym"], **common))
    return tuple(result)


# -- notes ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Note:
    """One USDT probe site of a file. `address` and `semaphore` are link-time addresses,
    already adjusted for prelink (`.stapsdt.base`); `semaphore` is 0 when there is none."""

    provider: str
    name: str
    address: int
    semaphore: int
    args_text: str

    @property
    def args(self) -> tuple[Arg, ...]:
        return parse_args(self.args_text)

    @property
    def label(self) -> str:
        return f"{self.provider}:{self.name}"

    exported = True   # a spec's ambiguity rule (stepper.specs) treats every site as public


def notes(path: str) -> list[Note]:
    """Every `.note.stapsdt` probe of the ELF file at `path`, in file order."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError as e:
        raise UsdtError(f"cannot read {path}: {e.strerror}") from None
    return _notes(real, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _notes(path: str, size: int, mtime: int) -> list[Note]:
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile   # here: most runs read no ELF file (elf_cache)

    try:
        with open(path, "rb") as stream:
            elf = ELFFile(stream)
            section = elf.get_section_by_name(".note.stapsdt")
            if section is None:
                return []
            base_section = elf.get_section_by_name(".stapsdt.base")
            actual_base = base_section["sh_addr"] if base_section is not None else None
            result = []
            for note in section.iter_notes():
                # pyelftools names type 3 after the GNU note of the same number
                if note["n_name"] != "stapsdt" or note["n_type"] not in (
                        NT_STAPSDT, "NT_STAPSDT", "NT_GNU_BUILD_ID"):
                    continue
                desc = note["n_descdata"]
                if isinstance(desc, str):   # pyelftools hands unknown descs over as latin-1
                    desc = desc.encode("latin-1")
                pc, base, semaphore = struct.unpack_from("<QQQ", desc)
                provider, name, args = desc[24:].split(b"\0")[:3]
                if actual_base is not None and base:
                    pc += actual_base - base
                    if semaphore:
                        semaphore += actual_base - base
                result.append(Note(provider.decode(), name.decode(), pc, semaphore,
                                   args.decode()))
            return result
    except (OSError, ELFError, struct.error, ValueError) as e:
        raise UsdtError(f"cannot read the USDT notes of {path} ({e})") from None


def note_at(path: str, vaddr: int) -> Note | None:
    """The probe of `path` whose site is link-time address `vaddr` (a Probe's address less
    its object's bias): where `$arg1..$argN` of a hit come from."""
    return next((n for n in notes(path) if n.address == vaddr), None)


# -- specs ------------------------------------------------------------------------------------

def parse_usdt_spec(text: str, spec_class, syntax_error):
    """`usdt:[OBJECT:]PROVIDER:NAME` as a stepper.specs.Spec of kind "usdt"."""
    parts = text[len("usdt:"):].split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise syntax_error(f"bad USDT probe spec {text!r} (write usdt:PROVIDER:NAME or "
                           "usdt:OBJECT:PROVIDER:NAME; globs allowed)")
    obj = parts[0] if len(parts) == 3 else None
    return spec_class(text, "usdt", object=obj, pattern=":".join(parts[-2:]))


def usdt_sites(spec, path: str) -> list[Note]:
    """The probes of the file at `path` that a usdt spec names."""
    provider, name = spec.pattern.split(":")
    return [n for n in notes(path) if fnmatch.fnmatchcase(n.provider, provider)
            and fnmatch.fnmatchcase(n.name, name)]


def usdt_probes(spec, path: str, bias: int, probe_class) -> list:
    """stepper.specs.Probe records (runtime addresses) for the sites `spec` names in `path`."""
    return [probe_class(spec.text, os.path.basename(path), f"usdt:{n.label}", bias + n.address,
                        path, semaphore=bias + n.semaphore if n.semaphore else None)
            for n in usdt_sites(spec, path)]
