"""What can run out of line, and the encoding facts the XOL rewrite needs: the refusal table
(with the reason beside each class of instruction), the location of REX/VEX/EVEX prefixes,
and the registers an instruction uses (so the scratch register is never one of them).

Split from stepper.xol, which compiles the slot and its fix-ups from these facts; this part is
pure analysis of one decoded instruction (capstone's), with no addresses involved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from capstone import x86_const as X

if TYPE_CHECKING:  # pragma: no cover - typing only; emu is imported by callers
    import emu

__all__ = ["REFUSED", "refusal_reason", "registers_used", "scratch_for", "encoding",
           "is_rip_relative", "is_relative_branch", "addr32"]

_MAX_INSN = 15


# --------------------------------------------------------------------------------------------
# Refusals: capstone instruction id -> reason. Everything not listed (and not caught by the
# encoding checks in `refusal_reason`) runs out of line.
# --------------------------------------------------------------------------------------------

def _ids(*names: str) -> list[int]:
    return [getattr(X, f"X86_INS_{name}") for name in names]


_SYSTEM = ("system instruction: faults with SIGSEGV at user privilege (CPL 3); "
           "not probed, as uprobes does")
_IO = ("port I/O: faults with SIGSEGV unless the program has I/O permission (ioperm/iopl); "
       "not probed, as uprobes does")
_DESCRIPTOR = ("descriptor-table/system-segment instruction: with UMIP the kernel emulates it "
               "by decoding the code at the faulting RIP; not probed, as uprobes does")
_TRAP = ("raises SIGTRAP itself, which the engine could not tell from its single-step trap; "
         "the program's own trap must stay the program's")
_INT_N = ("software interrupt: int 0x80 is a system call the kernel single-steps unreliably "
          "and any other vector faults; not probed, as uprobes does")
_FAR = ("far transfer: reloads CS (and SS/RSP/RFLAGS for iret), which a RIP fix-up cannot "
        "describe")
_SYSENTER = ("sysenter: invalid in 64-bit mode on AMD, and on Intel it enters the kernel by the "
             "32-bit path, which returns to a fixed address, never to the slot")
_XBEGIN = ("xbegin: its abort handler is RIP-relative and the single-step trap aborts the "
           "transaction, so the slot would become the abort target")
_MOV_SS = ("loads SS, which blocks the single-step trap for one instruction: the step would "
           "run past the slot")
_ENCLU = "enclu: enters or exits an SGX enclave, transferring control elsewhere"

REFUSED: dict[int, str] = {}
for _reason, _names in (
    (_SYSTEM, ("HLT", "CLI", "STI", "CLTS", "INVD", "WBINVD", "WBNOINVD", "INVLPG", "INVLPGA",
               "INVPCID", "WRMSR", "RDMSR", "SWAPGS", "SYSRET", "SYSRETQ", "SYSEXIT",
               "SYSEXITQ", "RSM", "LGDT", "LIDT", "LLDT", "LTR", "LMSW", "XSETBV", "XRSTORS",
               "XRSTORS64", "XSAVES", "XSAVES64", "CLAC", "STAC", "MONITOR", "MWAIT",
               "MONITORX", "MWAITX", "GETSEC", "ENCLS", "ENCLV", "PCONFIG", "SETSSBSY",
               "CLRSSBSY", "INVEPT", "INVVPID", "VMCALL", "VMCLEAR", "VMFUNC", "VMLAUNCH",
               "VMLOAD", "VMMCALL", "VMPTRLD", "VMPTRST", "VMREAD", "VMRESUME", "VMRUN",
               "VMSAVE", "VMWRITE", "VMXOFF", "VMXON")),
    (_IO, ("IN", "OUT", "INSB", "INSW", "INSD", "OUTSB", "OUTSW", "OUTSD")),
    (_DESCRIPTOR, ("SGDT", "SIDT", "SLDT", "STR", "SMSW", "VERR", "VERW")),
    (_TRAP, ("INT3", "INT1")),
    (_INT_N, ("INT", "INTO")),
    (_FAR, ("LJMP", "LCALL", "RETF", "RETFQ", "IRET", "IRETD", "IRETQ")),
    (_SYSENTER, ("SYSENTER",)),
    (_XBEGIN, ("XBEGIN",)),
    (_ENCLU, ("ENCLU",)),
):
    for _id in _ids(*_names):
        REFUSED[_id] = _reason

#: Registers an instruction uses without naming them, where capstone 5's regs_access() is
#: known to leave them out (checked by the tests); added to what capstone reports.
_IMPLICIT: dict[int, tuple[str, ...]] = {}
for _names, _regs in (
    (("PCMPESTRI", "VPCMPESTRI", "PCMPESTRM", "VPCMPESTRM"), ("rax", "rdx", "rcx")),
    (("PCMPISTRI", "VPCMPISTRI"), ("rcx",)),
    (("CMPXCHG8B", "CMPXCHG16B"), ("rax", "rbx", "rcx", "rdx")),
    (("MUL", "IMUL", "DIV", "IDIV", "CMPXCHG"), ("rax", "rdx")),
    (("MULX",), ("rdx",)),
    (("XSAVE", "XSAVE64", "XSAVEOPT", "XSAVEOPT64", "XSAVEC", "XSAVEC64", "XRSTOR",
      "XRSTOR64"), ("rax", "rdx")),
    (("MASKMOVQ", "MASKMOVDQU", "VMASKMOVDQU"), ("rdi",)),
):
    for _id in _ids(*_names):
        _IMPLICIT[_id] = _regs

# Scratch candidates in preference order, with their ModRM register numbers. Low registers
# only (no REX.B needed); never rsp (rm=100 means a SIB byte follows). rsi/rdi/rbx first, as
# uprobes: no instruction with a ModRM byte uses them implicitly except the ones listed above.
_SCRATCH = (("rsi", 6), ("rdi", 7), ("rbx", 3), ("rbp", 5), ("rcx", 1), ("rdx", 2), ("rax", 0))
_LOW_REGS = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi")

_LEGACY_PREFIXES = frozenset((0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67, 0xF0, 0xF2, 0xF3))


#: capstone register name -> the 64-bit general register holding it ('cl' -> 'rcx').
_FAMILY: dict[str, str] = {}
for _full, _parts in {
    "rax": ("eax", "ax", "al", "ah"), "rbx": ("ebx", "bx", "bl", "bh"),
    "rcx": ("ecx", "cx", "cl", "ch"), "rdx": ("edx", "dx", "dl", "dh"),
    "rsi": ("esi", "si", "sil"), "rdi": ("edi", "di", "dil"),
    "rbp": ("ebp", "bp", "bpl"), "rsp": ("esp", "sp", "spl"),
    **{f"r{n}": (f"r{n}d", f"r{n}w", f"r{n}b") for n in range(8, 16)},
}.items():
    _FAMILY[_full] = _full
    for _p in _parts:
        _FAMILY[_p] = _full


# --------------------------------------------------------------------------------------------
# Encoding facts, all located from capstone's offsets (no decoding here).
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Encoding:
    kind: str          # "legacy", "rex", "vex2", "vex3", "evex" or "xop"
    offset: int        # offset of the REX/VEX/EVEX/XOP byte (or of the opcode for legacy)


def encoding(code: bytes, modrm_offset: int) -> _Encoding:
    """Locate the REX/VEX/EVEX prefix, which sits right after the legacy prefixes.

    Capstone gives the ModRM offset but not the encoding prefix's; we skip the legacy prefix
    bytes (a fixed set) and check the layout against capstone's ModRM offset.
    """
    p = 0
    while p < len(code) and code[p] in _LEGACY_PREFIXES:
        p += 1
    b = code[p]
    if 0x40 <= b <= 0x4F:
        return _Encoding("rex", p)
    # The VEX/EVEX payload sits between the escape byte and the opcode; a ModRM exactly
    # after the opcode confirms the layout (c4/c5/62 as plain opcodes have no such shape
    # in 64-bit mode, 8f is pop r/m unless the XOP map field is >= 8).
    if b == 0xC5 and modrm_offset == p + 3:
        return _Encoding("vex2", p)
    if b == 0xC4 and modrm_offset == p + 4:
        return _Encoding("vex3", p)
    if b == 0x8F and modrm_offset == p + 4 and (code[p + 1] & 0x1F) >= 8:
        return _Encoding("xop", p)
    if b == 0x62 and modrm_offset == p + 5:
        return _Encoding("evex", p)
    return _Encoding("legacy", p)


def _vvvv(code: bytes, enc: _Encoding) -> int | None:
    """Low three bits of the (inverted) VEX/EVEX/XOP vvvv register field, if any."""
    if enc.kind == "vex2":
        byte = code[enc.offset + 1]
    elif enc.kind in ("vex3", "xop", "evex"):
        byte = code[enc.offset + 2]
    else:
        return None
    return ((byte >> 3) & 7) ^ 7


def is_rip_relative(cs) -> bool:
    """A [rip+disp] operand, or [eip+disp] (67 prefix), which capstone gives base EIP."""
    return any(op.type == X.X86_OP_MEM and op.mem.base in (X.X86_REG_RIP, X.X86_REG_EIP)
               for op in cs.operands)


def addr32(cs) -> bool:
    return cs.prefix[3] == 0x67


def _used_registers(cs) -> set[str]:
    """Every 64-bit general register the instruction reads or writes, explicitly or not.

    Capstone's regs_access() gives explicit and implicit accesses; `_IMPLICIT` adds what it is
    known to omit. Like uprobes and GDB we also count, conservatively, the register numbered by
    ModRM.reg and by VEX.vvvv (low three bits), whatever they mean for this opcode: with seven
    candidates there is always one left, and a wrong guess could only cost a candidate.
    """
    used: set[str] = set()
    reads, writes = cs.regs_access()
    for reg in (*reads, *writes):
        full = _FAMILY.get(cs.reg_name(reg))
        if full:
            used.add(full)
    used.update(_IMPLICIT.get(cs.id, ()))
    code = bytes(cs.bytes)
    if cs.modrm_offset:
        used.add(_LOW_REGS[(code[cs.modrm_offset] >> 3) & 7])
        v = _vvvv(code, encoding(code, cs.modrm_offset))
        if v is not None:
            used.add(_LOW_REGS[v])
    return used


def registers_used(insn: "emu.Instruction") -> frozenset[str]:
    """The general registers `insn` is taken to use, none of which is ever its scratch."""
    return frozenset(_used_registers(insn.capstone))


def scratch_for(cs) -> tuple[str, int] | None:
    used = _used_registers(cs)
    for name, number in _SCRATCH:
        if name not in used:
            return name, number
    return None


def _is_far_indirect(cs) -> bool:
    """``call far [m]`` (FF /3) and ``jmp far [m]`` (FF /5): capstone names them call/jmp."""
    if cs.id not in (X.X86_INS_CALL, X.X86_INS_JMP) or not cs.modrm_offset:
        return False
    code = bytes(cs.bytes)
    return code[cs.modrm_offset - 1] == 0xFF and (code[cs.modrm_offset] >> 3) & 7 in (3, 5)


def _loads_ss(cs) -> bool:
    if cs.id not in (X.X86_INS_MOV, X.X86_INS_POP):
        return False
    reads, writes = cs.regs_access()
    return X.X86_REG_SS in writes


def is_relative_branch(cs) -> bool:
    return cs.group(X.X86_GRP_BRANCH_RELATIVE) and any(
        op.type == X.X86_OP_IMM for op in cs.operands)


def refusal_reason(insn: "emu.Instruction") -> str | None:
    """Why `insn` cannot be executed out of line, or None if it can (from any slot).

    Slot-independent on purpose: the engine asks once, at breakpoint insertion, and refuses
    the breakpoint (nothing written) when neither emulation nor XOL can step it.
    """
    cs = insn.capstone
    reason = REFUSED.get(cs.id)
    if reason:
        return reason
    if _is_far_indirect(cs):
        return _FAR
    if _loads_ss(cs):
        return _MOV_SS
    if insn.length > _MAX_INSN:  # pragma: no cover - capstone never decodes such bytes
        return f"{insn.length} bytes: longer than an x86 instruction can be"
    if is_relative_branch(cs):
        if cs.prefix[2] == 0x66 and not cs.rex & 0x8:  # REX.W makes it a 64-bit branch anyway
            return ("operand-size prefix on a relative branch: Intel ignores it, AMD truncates "
                    "RIP to 16 bits, so its target is not knowable")
        if cs.imm_size not in (1, 4) or not cs.imm_offset:
            return "relative branch without a rel8/rel32 field capstone can locate"
    if is_rip_relative(cs):
        code = bytes(cs.bytes)
        m = cs.modrm_offset
        if not m or (code[m] & 0xC7) != 0x05 or cs.disp_offset != m + 1:
            return "RIP-relative operand without the ModRM 00-xxx-101 + disp32 layout"
        enc = encoding(code, m)
        if enc.kind == "legacy" and code[enc.offset] in (0xC4, 0xC5, 0x62):
            return "VEX/EVEX prefix whose layout does not match capstone's ModRM offset"
        if scratch_for(cs) is None:
            return ("RIP-relative operand and every candidate scratch register (rax..rdi "
                    "but rsp) is used by the instruction")
    return None
