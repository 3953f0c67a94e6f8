"""Functions, parameters and local variables from DWARF, with their locations evaluated
against a stopped thread: what `stepper list lines|vars` shows and what fetchargs by
parameter name (`-p 'work a s'`) read.

pyelftools reads the DIEs, location lists and types (`describe_cpp_datatype`); what is here
is choosing the DIEs of a function, the location expression in force at one address, and
evaluating it (a register, a frame-base slot, a stack or memory slot, a computed value).
What cannot be evaluated at that address is a DwarfValueError naming why (optimised out, a
value split in pieces, a slot the prologue has not written yet), never a guess.

Addresses are link-time (file) addresses: the caller subtracts the load bias.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass
from typing import Callable, Mapping

from elftools.common.exceptions import DWARFError, ELFError
from elftools.dwarf.datatype_cpp import describe_cpp_datatype
from elftools.dwarf.dwarf_expr import DWARFExprParser
from elftools.dwarf.locationlists import BaseAddressEntry, LocationParser
from elftools.elf.elffile import ELFFile

from . import cfi, cfi_expr, demangle
from .errors import StepperError

__all__ = ["Function", "Variable", "DwarfValueError", "functions", "find", "read_value",
           "line_rows", "after_prologue", "describe_location"]


class DwarfValueError(StepperError):
    """A variable whose value cannot be read at that address; the message says why."""


@dataclass(frozen=True)
class Variable:
    """A parameter (`param`) or local variable (`local`) of a function: its C type as text,
    its size in bytes (None when unknown), and its location ranges: a list of (start, end,
    expression bytes) in link-time addresses (start None: valid everywhere), or [] when the
    compiler dropped it (optimised out)."""

    name: str
    kind: str
    type: str
    size: int | None
    ranges: tuple
    #: what the value is, for a fetch's default type: "signed", "unsigned" (integers, enums,
    #: bool, char types by their encoding), "pointer" (pointers, arrays), "other" (structs...)
    encoding: str = "other"

    def expression_at(self, pc: int) -> list[int] | None:
        """The location expression in force at `pc`, None where there is none."""
        for start, end, expr in self.ranges:
            if start is None or start <= pc < end:
                return list(expr)
        return None


@dataclass(frozen=True)
class Function:
    """One function with code (a DW_TAG_subprogram with an address): `name` as written in
    the source (C++: the demangled base name), [low, high) its code, its declaration's file
    and line, its parameters and outermost locals, and its frame base expression."""

    name: str
    low: int
    high: int
    file: str | None
    line: int | None
    variables: tuple[Variable, ...]
    frame_base: tuple
    path: str
    linkage: str | None = None   # the mangled name (C++), None for C
    #: the separate debug file the DWARF came from (build-id or .gnu_debuglink), None when
    #: it is `path`'s own; `path` stays the object that runs (its .eh_frame, its symbols)
    debug_path: str | None = None

    @property
    def dwarf(self) -> str:
        """The file holding this function's DWARF (expressions, line table)."""
        return self.debug_path or self.path

    @property
    def title(self) -> str:
        """The name to show: C++ with its signature (overloads differ), else `name`."""
        if self.linkage is None:
            return self.name
        return demangle._drop_return_type(demangle.demangle(self.linkage))

    @property
    def params(self) -> list[Variable]:
        return [v for v in self.variables if v.kind == "param"]

    def needs_prologue(self, pc: int) -> bool:
        """Whether some parameter lives at `pc` in a slot of the function's own frame (below
        the CFA), which only the prologue fills: an unoptimised build at its first
        instruction. Slots at or above the CFA are the caller's stack arguments, valid."""
        return pc == self.low and any(_own_frame_slot(self.dwarf, v.expression_at(pc))
                                      for v in self.params)


def _own_frame_slot(path: str, expr: list[int] | None) -> bool:
    if not expr or expr[0] != _FBREG:
        return False
    (op, *_rest) = DWARFExprParser(_structs(path)).parse_expr(expr)
    return op.args[0] < 0


_FBREG = 0x91   # DW_OP_fbreg


def functions(path: str) -> list[Function]:
    """Every function with code in the DWARF of `path`, or of its separate debug file (found
    as gdb finds it: stepper.symbols, by build-id under /usr/lib/debug/.build-id or by
    .gnu_debuglink) when `path` has none, in DIE order. Empty when neither has DWARF."""
    real = os.path.realpath(path)
    found = _functions(*_identity(real, path))
    if found:
        return found
    from .symbols import ElfFileError, ElfSymbols
    try:
        debug = ElfSymbols.load(real).debug_file
    except ElfFileError:
        return found
    if debug is None:
        return found
    return _debug_functions(real, *_identity(os.path.realpath(debug), debug))


@functools.lru_cache(maxsize=16)
def _debug_functions(binary: str, debug: str, size: int, mtime: int) -> list[Function]:
    """The functions of a separate debug file, as functions of the object that runs."""
    return [dataclasses.replace(f, path=binary, debug_path=f.path)
            for f in _functions(debug, size, mtime)]


def _identity(real: str, path: str) -> tuple[str, int, int]:
    try:
        st = os.stat(real)
    except OSError as e:
        raise StepperError(f"cannot read {path}: {e.strerror}") from None
    return real, st.st_size, st.st_mtime_ns


def find(path: str, name: str) -> list[Function]:
    """The functions of `path` called `name`: its source name, linkage name, or a
    demangled signature (`ns::Acc::add(int)`); shell globs allowed."""
    glob = any(c in name for c in "*?[")
    import fnmatch
    found = []
    for function in functions(path):
        if (fnmatch.fnmatchcase(function.name, name) if glob else function.name == name) or (
                function.linkage and (function.linkage == name or demangle.matches(
                    name, function.linkage, glob))):
            found.append(function)
    return found


@functools.lru_cache(maxsize=16)
def _functions(path: str, size: int, mtime: int) -> list[Function]:
    try:
        with open(path, "rb") as stream:
            elf = ELFFile(stream)
            if not elf.has_dwarf_info():
                return []
            dwarf = elf.get_dwarf_info()
            locations = LocationParser(dwarf.location_lists())
            ranges = dwarf.range_lists()
            result = []
            for cu in dwarf.iter_CUs():
                files = _file_names(dwarf, cu)
                base = cu.get_top_DIE().attributes.get("DW_AT_low_pc")
                for die in cu.iter_DIEs():
                    if die.tag != "DW_TAG_subprogram":
                        continue
                    code = _code_range(die, cu, ranges, base.value if base else 0)
                    if code is not None:
                        result.append(_function(die, cu, files, locations,
                                                base.value if base else 0, path, code))
            return result
    except (OSError, ELFError, DWARFError, AssertionError, KeyError) as e:
        raise StepperError(f"cannot read the DWARF of {path} ({e})") from None


def _origin(die):
    """The DIE holding a function's name and declaration (specification, abstract origin)."""
    for attribute in ("DW_AT_specification", "DW_AT_abstract_origin"):
        if attribute in die.attributes:
            return _origin(die.get_DIE_from_attribute(attribute))
    return die


def _code_range(die, cu, ranges, cu_base: int) -> tuple[int, int] | None:
    """[low, high) of the part of a function that holds its entry: DW_AT_low_pc/high_pc,
    or, for code split in ranges (a hot/cold split), the range where it is entered
    (DW_AT_entry_pc, else the first range, which gcc gives to the entry)."""
    attrs = die.attributes
    if "DW_AT_low_pc" in attrs:
        low = attrs["DW_AT_low_pc"].value
        high_attr = attrs.get("DW_AT_high_pc")
        high = low if high_attr is None else (
            high_attr.value if high_attr.form == "DW_FORM_addr" else low + high_attr.value)
        return low, high
    if "DW_AT_ranges" not in attrs or ranges is None or \
            attrs["DW_AT_ranges"].form != "DW_FORM_sec_offset":
        return None
    base, spans = cu_base, []
    for entry in ranges.get_range_list_at_offset(attrs["DW_AT_ranges"].value, cu=cu):
        if not hasattr(entry, "begin_offset"):
            base = getattr(entry, "base_address", base)
            continue
        offset = 0 if getattr(entry, "is_absolute", False) else base
        spans.append((entry.begin_offset + offset, entry.end_offset + offset))
    entry_pc = attrs.get("DW_AT_entry_pc")
    for low, high in spans:
        if entry_pc is None or low <= entry_pc.value < high:
            return low, high
    return None


def _function(die, cu, files, locations, cu_base: int, path: str,
              code: tuple[int, int]) -> Function:
    origin = _origin(die)
    attrs = origin.attributes
    linkage = attrs.get("DW_AT_linkage_name") or attrs.get("DW_AT_MIPS_linkage_name")
    if linkage is not None:
        name = demangle.base_name(demangle.demangle(linkage.value.decode()))
    else:
        name = attrs["DW_AT_name"].value.decode() if "DW_AT_name" in attrs else "?"
    low, high = code
    file_index = attrs.get("DW_AT_decl_file")
    file = files.get(file_index.value) if file_index is not None else None
    line = attrs["DW_AT_decl_line"].value if "DW_AT_decl_line" in attrs else None
    variables = []
    for child in die.iter_children():
        kind = {"DW_TAG_formal_parameter": "param", "DW_TAG_variable": "local"}.get(child.tag)
        if kind is None:
            continue
        named = _origin(child)
        if "DW_AT_name" not in named.attributes:
            continue
        variables.append(Variable(named.attributes["DW_AT_name"].value.decode(), kind,
                                  _type_text(named), _type_size(named),
                                  _ranges(child, cu, locations, cu_base),
                                  _encoding(named)))
    frame_base = die.attributes.get("DW_AT_frame_base")
    return Function(name, low, high, file, line, tuple(variables),
                    tuple(frame_base.value) if frame_base is not None else (), path,
                    linkage.value.decode() if linkage is not None else None)


def _type_text(die) -> str:
    if "DW_AT_type" not in die.attributes:
        return "?"
    try:
        return str(describe_cpp_datatype(die))
    except (KeyError, AttributeError, DWARFError, AssertionError, TypeError, ValueError):
        # pyelftools' describer does not know every DWARF shape (a VLA's bound expression)
        return "?"


def _type_size(die) -> int | None:
    seen = 0
    while "DW_AT_type" in die.attributes and seen < 16:
        die = die.get_DIE_from_attribute("DW_AT_type")
        if "DW_AT_byte_size" in die.attributes:
            return die.attributes["DW_AT_byte_size"].value
        if die.tag == "DW_TAG_pointer_type":
            return 8
        seen += 1
    return None


_SIGNED_ENCODINGS = (0x5, 0x6, 0xd)   # DW_ATE_signed, signed_char, signed_fixed
_QUALIFIERS = ("DW_TAG_typedef", "DW_TAG_const_type", "DW_TAG_volatile_type",
               "DW_TAG_restrict_type", "DW_TAG_atomic_type")


def _encoding(die) -> str:
    """Variable.encoding of a DIE's type: through typedefs and qualifiers to what it is."""
    for _ in range(16):
        if "DW_AT_type" not in die.attributes:
            return "other"
        die = die.get_DIE_from_attribute("DW_AT_type")
        if die.tag in _QUALIFIERS:
            continue
        if die.tag in ("DW_TAG_pointer_type", "DW_TAG_array_type", "DW_TAG_reference_type",
                       "DW_TAG_rvalue_reference_type"):
            return "pointer"
        if die.tag == "DW_TAG_enumeration_type":
            return "unsigned" if "DW_AT_type" not in die.attributes else _encoding(die)
        if die.tag == "DW_TAG_base_type":
            encoding = die.attributes.get("DW_AT_encoding")
            if encoding and encoding.value in (0x3, 0x4, 0x9):   # complex, float, decimal
                return "other"
            return "signed" if encoding and encoding.value in _SIGNED_ENCODINGS else "unsigned"
        return "other"
    return "other"


def _ranges(die, cu, locations, cu_base: int) -> tuple:
    attr = die.attributes.get("DW_AT_location")
    if attr is None:
        return ()
    parsed = locations.parse_from_attribute(attr, cu["version"], die)
    if hasattr(parsed, "loc_expr"):
        return ((None, None, tuple(parsed.loc_expr)),)
    base, ranges = cu_base, []
    for entry in parsed:
        if isinstance(entry, BaseAddressEntry):
            base = entry.base_address
            continue
        offset = 0 if getattr(entry, "is_absolute", False) else base
        ranges.append((entry.begin_offset + offset, entry.end_offset + offset,
                       tuple(entry.loc_expr)))
    return tuple(ranges)


def _file_names(dwarf, cu) -> dict[int, str]:
    program = dwarf.line_program_for_CU(cu)
    if program is None:
        return {}
    entries = program["file_entry"]
    directories = program["include_directory"]
    first = 0 if program.header["version"] >= 5 else 1
    names = {}
    for index, entry in enumerate(entries, start=first):
        name = entry.name.decode()
        directory = entry.dir_index - (0 if first == 0 else 1)
        if not name.startswith("/") and 0 <= directory < len(directories):
            name = os.path.join(directories[directory].decode(), name)
        names[index] = name
    return names


@functools.lru_cache(maxsize=16)
def _rows(path: str) -> tuple:
    from .elf import line_rows
    return tuple(sorted(set((r.address, r.line, r.path) for r in line_rows(path))))


def line_rows(function: Function) -> list[tuple[int, int, str]]:
    """The statement starts (address, line, source path) inside `function`, by address."""
    return [r for r in _rows(function.dwarf) if function.low <= r[0] < function.high]


def after_prologue(function: Function) -> int:
    """Where a probe by parameter name goes (what gdb's `break FUNC` and perf probe do):
    the function's first instruction when every parameter can be read there, else the
    second statement start of the line table (past the prologue that stores them)."""
    if not function.needs_prologue(function.low):
        return function.low
    addresses = sorted({r[0] for r in line_rows(function) if r[0] > function.low})
    return addresses[0] if addresses else function.low


def describe_location(function: Function, variable: Variable, pc: int) -> str:
    """Where `variable` is at `pc`, in words: `rdi`, `CFA+8`, `CFA-52`, `memory`, `computed`,
    or why it cannot be read there (optimised out, not written yet, in pieces)."""
    expr = variable.expression_at(pc)
    if expr is None:
        return "optimised out here"
    if pc == function.low and _own_frame_slot(function.dwarf, expr):
        return "stack slot not written before the prologue"
    ops = DWARFExprParser(_structs(function.dwarf)).parse_expr(expr)
    first = ops[0].op_name
    if len(ops) == 1 and first.startswith("DW_OP_reg"):
        return cfi_expr.reg_name(ops[0].args[0] if first == "DW_OP_regx" else int(first[9:]))
    if first == "DW_OP_fbreg":
        return f"frame base{ops[0].args[0]:+d}" if len(ops) == 1 else "frame-based, computed"
    if first in ("DW_OP_entry_value", "DW_OP_GNU_entry_value"):
        return "value at entry" + ("" if pc == function.low else ": not readable here")
    if any(op.op_name in ("DW_OP_piece", "DW_OP_bit_piece") for op in ops):
        return "in pieces: not readable"
    if first == "DW_OP_addr":
        return f"at {ops[0].args[0]:#x}"
    return "computed" if ops[-1].op_name == "DW_OP_stack_value" else "memory"


# -- values -----------------------------------------------------------------------------------

def read_value(function: Function, variable: Variable, pc: int, regs: Mapping[str, int],
               memory: Callable[[int, int], bytes], bias: int = 0) -> int | bytes:
    """The value of `variable` at link-time address `pc` of `function`, in a thread stopped
    there with registers `regs` (user_regs names) and memory reader `memory(addr, size)`;
    `bias` is the object's load bias. An int for sizes up to 8 bytes (unsigned, the caller
    applies the type's sign), else the bytes. DwarfValueError says why it cannot be read."""
    where = f"{variable.name} at {function.name}+{pc - function.low:#x}"
    expr = variable.expression_at(pc)
    if expr is None:
        raise DwarfValueError(f"{where}: optimised out (no location at this address)")
    if pc == function.low and _own_frame_slot(function.dwarf, expr):
        raise DwarfValueError(f"{where}: in a stack slot the prologue has not written yet "
                              "(probe after the prologue)")
    parser = DWARFExprParser(_structs(function.dwarf))
    ops = parser.parse_expr(expr)
    size = variable.size or 8
    names = [op.op_name for op in ops]
    if any(n in ("DW_OP_piece", "DW_OP_bit_piece") for n in names):
        raise DwarfValueError(f"{where}: the value is split in pieces ({' '.join(names)})")
    if len(ops) == 1 and names[0].startswith("DW_OP_reg"):
        number = ops[0].args[0] if names[0] == "DW_OP_regx" else int(names[0][9:])
        return _sized(cfi_expr._register(regs, number), size)
    if names[:1] in (["DW_OP_entry_value"], ["DW_OP_GNU_entry_value"]):
        if pc != function.low:
            raise DwarfValueError(f"{where}: only its value at the function's entry is known")
        inner = ops[0].args[0]
        if len(inner) == 1 and inner[0].op_name.startswith("DW_OP_reg"):
            value = cfi_expr._register(regs, int(inner[0].op_name[9:]))
            ops = ops[1:]
            if [op.op_name for op in ops] in ([], ["DW_OP_stack_value"]):
                return _sized(value, size)
        raise DwarfValueError(f"{where}: entry-value expression not supported ({names})")
    if names[0] == "DW_OP_implicit_value":
        return _sized(int.from_bytes(bytes(ops[0].args[1]), "little"), size)
    stack_value = names[-1] == "DW_OP_stack_value"
    body = ops[:-1] if stack_value else ops
    push = None
    if names[0] == "DW_OP_fbreg":
        push = _frame_base(function, pc, regs, memory, bias) + ops[0].args[0]
        body = body[1:]
    if body and body[0].op_name == "DW_OP_addr":
        body = [type(body[0])(body[0].op, "DW_OP_const8u", [body[0].args[0] + bias],
                              body[0].offset)] + body[1:]
    try:
        result = cfi_expr.evaluate(body, regs, memory, push=push) if body else push
    except StepperError as e:
        raise DwarfValueError(f"{where}: {e}") from None
    if stack_value:
        return _sized(result, size)
    data = memory(result, size)
    if len(data) != size:
        raise DwarfValueError(f"{where}: cannot read {size} bytes at {result:#x}")
    return int.from_bytes(data, "little") if size <= 8 else bytes(data)


def _sized(value: int, size: int) -> int:
    return value & ((1 << 8 * min(size, 8)) - 1)


def _frame_base(function: Function, pc: int, regs, memory, bias: int) -> int:
    if list(function.frame_base) != [0x9C]:   # DW_OP_call_frame_cfa: what gcc emits
        parser = DWARFExprParser(_structs(function.dwarf))
        return cfi_expr.evaluate(parser.parse_expr(list(function.frame_base)), regs, memory)
    row = cfi.for_file(function.path).row(pc)
    if row is None:
        raise DwarfValueError(f"{function.name}: no call-frame information at {pc:#x}")
    rule = row.cfa
    if getattr(rule, "expr", None) is not None:
        ops = cfi.for_file(function.path).expression(rule.expr)
        return cfi_expr.evaluate(ops, regs, memory)
    return cfi_expr._register(regs, rule.reg) + rule.offset


@functools.lru_cache(maxsize=16)
def _structs(path: str):
    with open(path, "rb") as stream:
        return ELFFile(stream).get_dwarf_info().structs
