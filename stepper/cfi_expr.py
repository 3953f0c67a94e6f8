"""The DWARF expressions that appear in call-frame rules, evaluated against one frame.

Why a module: CFA rules and register rules may be DWARF expressions instead of
"register + offset": the PLT's `DW_CFA_def_cfa_expression` (rsp + 8, plus 8 more past the
push in each 16-byte entry), glibc's signal trampoline `__restore_rt` (every register is
read from the `ucontext_t` the kernel pushed). pyelftools decodes the bytes into operations
(`DWARFExprParser`); what is left is a small stack machine over those operations, with the
frame's registers and the process memory. An operation outside that set is an UnwindError
that names it, never a guess.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

if TYPE_CHECKING:   # a type only: importing pyelftools' DWARF expressions costs ~25 ms
    from elftools.dwarf.dwarf_expr import DWARFExprOp

from .errors import StepperError

MASK = (1 << 64) - 1

#: DWARF register number -> name (System V x86-64 psABI, figure 3.36).
DWARF_REGS = ("rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp",
              "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip")


class UnwindError(StepperError):
    """A frame cannot be unwound: the reason names what is missing or unsupported."""


def reg_name(number: int) -> str:
    return DWARF_REGS[number] if 0 <= number < len(DWARF_REGS) else f"DWARF register {number}"


def _signed(value: int) -> int:
    value &= MASK
    return value - (1 << 64) if value >> 63 else value


_BINARY: dict[str, Callable[[int, int], int]] = {
    "DW_OP_plus": lambda a, b: a + b,
    "DW_OP_minus": lambda a, b: a - b,
    "DW_OP_mul": lambda a, b: a * b,
    "DW_OP_and": lambda a, b: a & b,
    "DW_OP_or": lambda a, b: a | b,
    "DW_OP_xor": lambda a, b: a ^ b,
    "DW_OP_shl": lambda a, b: a << b if b < 64 else 0,
    "DW_OP_shr": lambda a, b: a >> b if b < 64 else 0,
    "DW_OP_shra": lambda a, b: _signed(a) >> min(b, 63),
    # Comparisons are signed (DWARF 5, 2.5.1.5).
    "DW_OP_eq": lambda a, b: int(_signed(a) == _signed(b)),
    "DW_OP_ne": lambda a, b: int(_signed(a) != _signed(b)),
    "DW_OP_lt": lambda a, b: int(_signed(a) < _signed(b)),
    "DW_OP_le": lambda a, b: int(_signed(a) <= _signed(b)),
    "DW_OP_gt": lambda a, b: int(_signed(a) > _signed(b)),
    "DW_OP_ge": lambda a, b: int(_signed(a) >= _signed(b)),
}
_UNARY: dict[str, Callable[[int], int]] = {
    "DW_OP_neg": lambda a: -_signed(a),
    "DW_OP_not": lambda a: ~a,
    "DW_OP_abs": lambda a: abs(_signed(a)),
}
_CONSTS = {"DW_OP_const1u", "DW_OP_const1s", "DW_OP_const2u", "DW_OP_const2s",
           "DW_OP_const4u", "DW_OP_const4s", "DW_OP_const8u", "DW_OP_const8s",
           "DW_OP_constu", "DW_OP_consts", "DW_OP_addr"}


def evaluate(ops: Sequence[DWARFExprOp], regs: Mapping[str, int],
             read: Callable[[int, int], bytes], push: int | None = None) -> int:
    """The value the expression leaves on top of the stack.

    `regs` are the registers of the frame being unwound (the callee's), `read(address, size)`
    the process memory; `push` is pushed first (register rules start with the CFA on the
    stack: DWARF 5, 6.4.1). Raises UnwindError for an operation outside the supported set,
    a register this frame does not know, or an unreadable address.
    """
    stack: list[int] = [] if push is None else [push & MASK]
    for op in ops:
        name = op.op_name
        if name.startswith("DW_OP_lit"):
            stack.append(op.op - 0x30)
        elif name in _CONSTS:
            stack.append(op.args[0] & MASK)
        elif name.startswith("DW_OP_breg") or name == "DW_OP_bregx":
            number, offset = (op.op - 0x70, op.args[0]) if name != "DW_OP_bregx" else op.args
            stack.append((_register(regs, number) + offset) & MASK)
        elif name in ("DW_OP_deref", "DW_OP_deref_size"):
            size = 8 if name == "DW_OP_deref" else op.args[0]
            stack.append(_load(read, _pop(stack, name), size))
        elif name == "DW_OP_plus_uconst":
            stack.append((_pop(stack, name) + op.args[0]) & MASK)
        elif name in _BINARY:
            b, a = _pop(stack, name), _pop(stack, name)
            stack.append(_BINARY[name](a, b) & MASK)
        elif name in _UNARY:
            stack.append(_UNARY[name](_pop(stack, name)) & MASK)
        elif name == "DW_OP_dup":
            stack.append(_peek(stack, 0, name))
        elif name == "DW_OP_over":
            stack.append(_peek(stack, 1, name))
        elif name == "DW_OP_pick":
            stack.append(_peek(stack, op.args[0], name))
        elif name == "DW_OP_drop":
            _pop(stack, name)
        elif name == "DW_OP_swap":
            b, a = _pop(stack, name), _pop(stack, name)
            stack += [b, a]
        elif name == "DW_OP_nop":
            continue
        else:
            raise UnwindError(f"cannot evaluate {name} in a call-frame expression "
                              "(only constants, registers, memory and arithmetic are supported)")
    if not stack:
        raise UnwindError("a call-frame expression left nothing on its stack")
    return stack[-1]


def _register(regs: Mapping[str, int], number: int) -> int:
    name = reg_name(number)
    if name not in regs:
        raise UnwindError(f"a call-frame expression needs {name}, which is not known in this frame")
    return regs[name]


def _pop(stack: list[int], name: str) -> int:
    if not stack:
        raise UnwindError(f"{name} on an empty expression stack")
    return stack.pop()


def _peek(stack: list[int], depth: int, name: str) -> int:
    if depth >= len(stack):
        raise UnwindError(f"{name} reaches below the expression stack")
    return stack[-1 - depth]


def _load(read: Callable[[int, int], bytes], address: int, size: int) -> int:
    if size not in (1, 2, 4, 8):
        raise UnwindError(f"cannot dereference {size} bytes in a call-frame expression")
    data = read_exact(read, address, size)
    return int.from_bytes(data, "little")


def read_exact(read: Callable[[int, int], bytes], address: int, size: int) -> bytes:
    """`size` bytes at `address`, or UnwindError naming the address."""
    try:
        data = read(address, size)
    except (OSError, StepperError) as e:
        raise UnwindError(f"cannot read the stack at {address:#x}: {e}") from None
    if len(data) != size:
        raise UnwindError(f"cannot read the stack at {address:#x}")
    return data


def read_word(read: Callable[[int, int], bytes], address: int) -> int:
    return struct.unpack("<Q", read_exact(read, address, 8))[0]
