"""The semantics table: capstone instruction id -> (family handler, undefined flags).

Each family module (data, alu, shift, muldiv, flow, flagops) exports `SPECS`, a dict of
capstone id -> Spec. A handler receives a `Context` (operands compiled once) and returns the
plan closure. `UNDEFINED` is the table of flags the SDM leaves undefined, per instruction: the
only bits a differential comparison may ignore.
"""

from __future__ import annotations

from typing import Mapping

from capstone import x86_const as X

from ..registers import GPR, XMM
from . import alu, data, flagops, flow, muldiv, shift, vector
from .context import Context, Spec

TABLE: dict[int, Spec] = {}
for _family in (data, alu, shift, muldiv, flow, flagops, vector):
    TABLE.update(_family.SPECS)

# Instructions a LOCK prefix is legal on (SDM Vol. 2A, LOCK); on anything else, or on a
# register destination, the CPU raises #UD, which only the CPU itself can deliver faithfully.
_LOCKABLE = {getattr(X, f"X86_INS_{m}") for m in (
    "ADD", "ADC", "AND", "BTC", "BTR", "BTS", "CMPXCHG", "CMPXCHG8B", "CMPXCHG16B", "DEC",
    "INC", "NEG", "NOT", "OR", "SBB", "SUB", "XOR", "XADD", "XCHG")}

_STRING = {getattr(X, f"X86_INS_{m}") for m in (
    "MOVSB", "MOVSW", "MOVSD", "MOVSQ", "STOSB", "STOSW", "STOSD", "STOSQ", "LODSB", "LODSW",
    "LODSD", "LODSQ", "CMPSB", "CMPSW", "CMPSD", "CMPSQ", "SCASB", "SCASW", "SCASD", "SCASQ",
    "INSB", "INSW", "INSD", "OUTSB", "OUTSW", "OUTSD")}

# Why a class of instruction is left to the CPU, checked in this order.
_REFUSED_GROUPS = (
    ({X.X86_GRP_PRIVILEGE}, "privileged instruction"),
    ({X.X86_GRP_INT, X.X86_GRP_IRET}, "interrupt: only the CPU raises it faithfully"),
    ({X.X86_GRP_FPU}, "x87 floating point is not emulated"),
    ({X.X86_GRP_MMX, X.X86_GRP_3DNOW}, "MMX is not emulated"),
    ({X.X86_GRP_SSE1, X.X86_GRP_SSE2, X.X86_GRP_SSE3, X.X86_GRP_SSSE3, X.X86_GRP_SSE41,
      X.X86_GRP_SSE42, X.X86_GRP_SSE4A, X.X86_GRP_AES, X.X86_GRP_PCLMUL, X.X86_GRP_SHA},
     "SSE registers are not emulated (yet)"),
    ({X.X86_GRP_AVX, X.X86_GRP_AVX2, X.X86_GRP_AVX512, X.X86_GRP_FMA, X.X86_GRP_FMA4,
      X.X86_GRP_F16C, X.X86_GRP_XOP}, "AVX registers are not emulated (yet)"),
)
_REFUSED_IDS = {
    X.X86_INS_SYSCALL: "system call: the kernel runs it",
    X.X86_INS_SYSENTER: "system call: the kernel runs it",
    X.X86_INS_INT: "interrupt: only the CPU raises it faithfully",
    X.X86_INS_INT3: "interrupt: only the CPU raises it faithfully",
    X.X86_INS_CPUID: "cpuid: the answer belongs to the real CPU",
    X.X86_INS_RDTSC: "time stamp counter: the answer belongs to the real CPU",
    X.X86_INS_RDTSCP: "time stamp counter: the answer belongs to the real CPU",
}


def refusal_reason(insn) -> str | None:
    """Why `insn` (a capstone instruction) is not emulated, for the known classes; else None."""
    reason = _REFUSED_IDS.get(insn.id)
    if reason:
        return reason
    if insn.id == X.X86_INS_PAUSE:  # a spin-wait hint, architecturally a nop (capstone files it under SSE2)
        return None
    xmm_operands = any(op.type == X.X86_OP_REG and op.reg in XMM for op in insn.operands)
    sse_form = insn.id in vector.EMULATED_SSE and xmm_operands and not _is_vex(insn)
    groups = set(insn.groups)
    for group_set, why in _REFUSED_GROUPS:
        if groups & group_set and not sse_form:
            return why
    if insn.id in _STRING and not sse_form:  # capstone's MOVSD is also the string movsd
        return "string instruction: not emulated"
    if X.X86_PREFIX_LOCK in insn.prefix:
        if insn.id not in _LOCKABLE or not any(op.type == X.X86_OP_MEM for op in insn.operands):
            return "lock prefix on an instruction that does not take it: the CPU raises #UD"
    for op in insn.operands:
        if op.type == X.X86_OP_REG and op.reg not in GPR and not (sse_form and op.reg in XMM):
            return f"operand register {insn.reg_name(op.reg)} is not emulated"
    return None


def _is_vex(insn) -> bool:
    """VEX/EVEX encodings (C4/C5/62 opcode escape) also write the upper YMM/ZMM bits."""
    return insn.opcode[0] in (0xC4, 0xC5, 0x62) or insn.mnemonic.startswith("v")


def undefined_flags(instruction, regs_before: Mapping[str, int]) -> int:
    """The rflags bits the SDM leaves undefined for `instruction` run from `regs_before`.

    Shift and rotate counts decide which of their flags are defined, so the register state
    before the instruction is needed for the `cl` forms.
    """
    cs_insn = getattr(instruction, "capstone", instruction)
    spec = TABLE.get(cs_insn.id)
    if spec is None or not spec.undefined:
        return 0
    if callable(spec.undefined):
        return spec.undefined(cs_insn, regs_before)
    return spec.undefined


__all__ = ["TABLE", "Context", "Spec", "refusal_reason", "undefined_flags"]
