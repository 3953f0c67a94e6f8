"""Decoding with capstone (the only place it is driven) into a prepared Instruction.

Per-site work happens here, once: capstone decodes with detail on, the semantics table picks
the family handler, and the handler compiles a plan, a closure that runs the instruction
against a State. Executing a prepared instruction is one call of its plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import capstone
from capstone import x86_const as X

from .errors import DecodeError, MemoryFault, Unsupported
from .flags import AC
from .semantics import TABLE, Context, refusal_reason
from .state import REGISTER_NAMES, VECTOR_REGISTERS

Plan = Callable[[object], None]
DEFAULT_KEYS: Mapping[str, str] = {name: name for name in REGISTER_NAMES + VECTOR_REGISTERS}

_md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
_md.detail = True

MAX_LENGTH = 15


@dataclass(frozen=True, eq=False)
class Instruction:
    """One decoded instruction at a fixed address, with its plan prepared.

    `emulatable` says whether `execute` runs it; `reason` says why not. `atomic` marks a locked
    read-modify-write (a `lock` prefix, or `xchg` with memory): the emulator's read and write
    are two separate accesses, so a caller whose other threads may run must not emulate it.
    `capstone` is the decoded capstone instruction, for callers that rewrite it (XOL).
    """

    address: int
    length: int
    bytes: bytes
    mnemonic: str
    text: str
    emulatable: bool
    reason: str | None
    atomic: bool
    rip_relative: bool
    capstone: capstone.CsInsn = field(repr=False)
    plan: Plan | None = field(repr=False)

    @property
    def next_address(self) -> int:
        return self.address + self.length

    def __repr__(self) -> str:
        return f"<Instruction {self.address:#x}: {self.text} ({self.bytes.hex()})>"


def decode(code: bytes, address: int) -> Instruction:
    """Decode the instruction at the start of `code`, located at `address`.

    Raises DecodeError for invalid or truncated bytes. Extra bytes after the instruction are
    ignored, so a caller may pass a 15-byte window read from memory.
    """
    code = bytes(code[:MAX_LENGTH])
    insn = next(_md.disasm(code, address, 1), None)
    if insn is None:
        raise DecodeError(f"no valid instruction at {address:#x}: {code.hex() or 'no bytes'}")
    text = f"{insn.mnemonic} {insn.op_str}".strip()
    atomic = X.X86_PREFIX_LOCK in insn.prefix or (
        insn.id == X.X86_INS_XCHG and any(op.type == X.X86_OP_MEM for op in insn.operands))
    rip_relative = any(op.type == X.X86_OP_MEM and op.mem.base in (X.X86_REG_RIP, X.X86_REG_EIP)
                       for op in insn.operands)
    try:
        plan = compile(insn)
        reason = None
    except Unsupported as e:
        plan, reason = None, e.reason
    return Instruction(address=address, length=insn.size, bytes=bytes(insn.bytes),
                       mnemonic=insn.mnemonic, text=text, emulatable=plan is not None,
                       reason=reason, atomic=atomic, rip_relative=rip_relative,
                       capstone=insn, plan=plan)


_bare = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)   # detail off: lengths only


def length(code: bytes) -> int:
    """The length of the instruction at the start of `code`, without preparing it (a few
    times cheaper than `decode`: for a caller that only needs the instruction's bytes, such
    as a memo keyed by them). Raises DecodeError as `decode` would."""
    for _address, size, _mnemonic, _operands in _bare.disasm_lite(bytes(code[:MAX_LENGTH]),
                                                                 0, 1):
        return size
    raise DecodeError(f"no valid instruction: {bytes(code[:MAX_LENGTH]).hex() or 'no bytes'}")


def text(code: bytes, address: int) -> str:
    """The text `decode(code, address).text` has, without preparing the instruction (a
    report naming thousands of sites needs their text only). Raises DecodeError as `decode`
    would."""
    code = bytes(code[:MAX_LENGTH])
    for _address, _size, mnemonic, operands in _bare.disasm_lite(code, address, 1):
        return f"{mnemonic} {operands}".strip()
    raise DecodeError(f"no valid instruction at {address:#x}: {code.hex() or 'no bytes'}")


def straddling(code: bytes, address: int, target: int) -> Instruction | None:
    """Decode forward from `address` (where `code` starts) to `target`: the instruction that
    starts before `target` and covers it, or None when `target` starts an instruction.

    Why: a breakpoint must replace an instruction's first byte, and only decoding from a known
    boundary (a function's start) tells where the boundaries are. DecodeError when bytes on
    the way do not decode (data in the function: the boundary cannot be known).
    """
    pc = address
    while pc < target:
        insn = decode(code[pc - address:], pc)
        if insn.next_address > target:
            return insn
        pc = insn.next_address
    return None


def compile(insn, keys: Mapping[str, object] | None = None, flags_oracle=None) -> Plan:
    """Compile a plan for `insn` (an Instruction or a capstone instruction).

    `keys` maps each register name of `emu.REGISTER_NAMES` (and, optionally, of
    `emu.VECTOR_REGISTERS`) to the key the target state's `regs` uses; the default is the names
    themselves (FlatState). A live thread can pass indices into its ptrace register buffer
    instead. Raises Unsupported, also for an instruction that needs a register the mapping
    lacks.

    `flags_oracle` (an emu.flag_oracle.FlagsOracle) computes the status flags of every
    instruction whose flags the SDM leaves partly undefined; without one, emu's own model
    does (emu.flag_oracle says why a live thread needs one).
    """
    cs_insn = insn.capstone if isinstance(insn, Instruction) else insn
    reason = refusal_reason(cs_insn)
    if reason:
        raise Unsupported(reason)
    spec = TABLE.get(cs_insn.id)
    if spec is None:
        raise Unsupported("not among the emulated instructions")
    keys = keys or DEFAULT_KEYS
    plan = spec.build(Context(cs_insn, keys, flags_oracle))
    if touches_memory(cs_insn) and not getattr(plan, "checks_alignment", False):
        plan = _alignment_checked(plan, keys["rflags"])
    return plan


_STACK_IDS = {X.X86_INS_PUSH, X.X86_INS_POP, X.X86_INS_CALL, X.X86_INS_RET, X.X86_INS_LEAVE,
              X.X86_INS_PUSHFQ, X.X86_INS_POPFQ}
_NO_ACCESS_IDS = {X.X86_INS_LEA, X.X86_INS_NOP}


def touches_memory(cs_insn) -> bool:
    """Does the instruction read or write memory (explicit operand or the stack)?"""
    if cs_insn.id in _STACK_IDS:
        return True
    return cs_insn.id not in _NO_ACCESS_IDS and any(
        op.type == X.X86_OP_MEM for op in cs_insn.operands)


class _AlignmentChecked:
    """A state whose misaligned 2-, 4-, 8- and 16-byte accesses fault, as the CPU's do when a
    program sets rflags.AC (Linux runs user code with CR0.AM on: #AC becomes SIGBUS; the
    native fuzz oracle confirmed it for movups/movdqu too)."""

    __slots__ = ("regs", "_state")

    def __init__(self, state) -> None:
        self._state, self.regs = state, state.regs

    def read(self, address: int, size: int) -> bytes:
        if size in (2, 4, 8, 16) and address & (size - 1):
            raise MemoryFault(address, size, "read")
        return self._state.read(address, size)

    def write(self, address: int, data: bytes) -> None:
        if len(data) in (2, 4, 8, 16) and address & (len(data) - 1):
            raise MemoryFault(address, len(data), "write")
        self._state.write(address, data)


def _alignment_checked(plan: Plan, flags_key) -> Plan:
    """Run `plan` through _AlignmentChecked while AC is set; the usual case pays one test.
    A plan marked `checks_alignment` makes that test itself (push r64) and is not wrapped."""
    def run(state):
        if state.regs[flags_key] & AC:
            return plan(_AlignmentChecked(state))
        return plan(state)
    return run


def execute(instruction: Instruction, state) -> None:
    """Run one prepared instruction on `state`, leaving rip at the next instruction or target.

    Raises Unsupported for what is not emulated, MemoryFault (state unchanged) for an access
    the CPU would fault on.
    """
    plan = instruction.plan
    if plan is None:
        raise Unsupported(instruction.reason or instruction.text)
    plan(state)
