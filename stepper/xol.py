"""Execute-out-of-line (XOL) planning: rewrite one instruction to run in a scratch slot.

The breakpoint's INT3 stays in place; the displaced instruction is copied into a slot of an
executable area the program cannot write, run there with one single-step, and the registers
(and, for a call, the pushed return address) are fixed up afterwards so the program sees what
running the instruction in place would have left. This module is pure: it only computes the
slot bytes and the register/memory fix-ups. The engine owns ptrace, the area and the slot.

What moves with the instruction and how it is put back (the facts follow Linux uprobes,
arch/x86/kernel/uprobes.c, and GDB's amd64 displaced stepping; the code is ours):

- RIP-relative memory operand: the 32-bit displacement is re-encoded for the slot when the
  target is within +-2 GiB of it, else the operand is rewritten to ``[scratch + disp32]`` with
  a scratch register loaded with the original next-instruction address (uprobes'
  riprel_pre_xol). The scratch is chosen from capstone's implicit and explicit register
  accesses, so ``shl [rip+x], cl`` never gets rcx, nor ``mul [rip+x]`` rax/rdx.
- Relative branches (jmp, jcc, loop, jrcxz, call rel32) keep their encoding; their
  displacement is pointed at a small stub inside the slot, ``jmp [rip+0]; .quad target``. A
  taken branch therefore stops (the single-step trap) at the stub, whose address maps back to
  the real target, and the fall-through stops at slot+len, which maps to the next
  instruction: exact for any distance, and no rel8 -> rel32 conversion is needed.
- Calls: the CPU pushed slot+len; it is rewritten to the original next address
  (uprobes' UPROBE_FIX_CALL). Indirect jumps, calls and ``ret`` leave an absolute RIP.
- ``syscall``: the CPU put slot+len in RCX and RFLAGS (with the single-step TF) in R11; both
  are mapped back. ``pushf`` pushed TF=1; the pushed word gets the program's own TF back.

stepper.xol_refusals lists what is never run out of line, with the reason beside each class,
and locates the encoding facts used here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from capstone import x86_const as X

from . import xol_refusals as refusals
from .errors import StepperError
from .xol_refusals import REFUSED, refusal_reason, registers_used  # noqa: F401 (public here too)

if TYPE_CHECKING:  # pragma: no cover - typing only; emu is imported by callers
    import emu

#: Bytes per slot. Every slot is SLOT_SIZE-aligned; a plan's `code` is exactly this long, so a
#: reused slot never keeps stale bytes from a previous instruction.
SLOT_SIZE = 64

#: Offset of the branch stub (``ff 25 00000000`` + 8-byte target). Bytes between the
#: instruction's end and the stub are int3, except the NOP after a syscall; they leave room
#: for boost's 14-byte jump back (docs/boost.md) after the longest (15-byte) instruction. The
#: stub's target qword is 8-byte aligned.
STUB_OFFSET = 34
_STUB_LEN = 14
_INT3 = 0xCC
_NOP = 0x90
_TF = 0x100
_M64 = (1 << 64) - 1

Read = Callable[[int, int], bytes]
Write = Callable[[int, bytes], None]


class XolRefused(StepperError):
    """The instruction cannot be executed out of line; `.reason` says why (one line)."""

    def __init__(self, insn: "emu.Instruction", reason: str) -> None:
        super().__init__(f"cannot step '{insn.text}' at {insn.address:#x} out of line: {reason}")
        self.reason = reason


class XolError(StepperError):
    """A fix-up was asked for in a state it cannot handle (a caller bug, not the program's)."""


# --------------------------------------------------------------------------------------------
# The plan.
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Token:
    """What `pre` saw and `post`/`abort` need: the scratch's value and the original flags."""

    scratch_value: int | None
    rflags: int


class XolPlan:
    """One instruction rewritten for one slot, with its pre-step and post-step fix-ups.

    Attributes: `code` (SLOT_SIZE bytes to write at `slot_address`), `instruction`,
    `slot_address`, `kind` (plain, syscall, pushf, jump, call, call_indirect, absolute),
    `scratch` (the register name used as base for a far RIP-relative operand, or None),
    `rewrite` (one line describing what was changed, for statistics and debugging),
    `boost_refusal` (None when the slot is self-contained: run without the single-step trap
    and followed by a jump back it would do what the instruction does in place; else why not).
    """

    def __init__(self, insn: "emu.Instruction", slot_address: int, code: bytes, kind: str,
                 scratch: str | None, stub: int | None, target: int | None,
                 rewrite: str) -> None:
        self.instruction = insn
        self.slot_address = slot_address
        self.code = code
        self.kind = kind
        self.scratch = scratch
        self.rewrite = rewrite
        self.boost_refusal = _boost_refusal(kind, scratch)
        self._end = slot_address + insn.length
        # Where the single-step can stop inside the slot -> where that is in the original.
        self._landings: dict[int, int] = {slot_address: insn.address, self._end: insn.next_address}
        if kind == "syscall":
            # GDB found kernels returning one instruction late after a stepped syscall; the
            # slot has a NOP there, and stopping after it means the same as after the syscall.
            self._landings[self._end + 1] = insn.next_address
        if stub is not None and target is not None:
            self._landings[stub] = target

    def __repr__(self) -> str:
        return f"<XolPlan {self.instruction.text} @ {self.slot_address:#x}: {self.rewrite}>"

    # -- the contract ------------------------------------------------------------------------

    def pre(self, regs: dict) -> Token:
        """Point `regs` at the slot (and load the scratch); return what post/abort need."""
        token = Token(regs[self.scratch] if self.scratch else None, regs["rflags"])
        if self.scratch:
            regs[self.scratch] = self.instruction.next_address
        regs["rip"] = self.slot_address
        return token

    def post(self, regs: dict, token: Token, read: Read | None, write: Write | None) -> None:
        """After the single-step's trap: make `regs` (and the stack) what running in place
        would have left. A rep string op stopped between iterations (RIP still at the slot)
        is mapped to the probe address, from which it restarts, as the CPU itself would."""
        rip = regs["rip"]
        slot_rip = self.slot_address <= rip < self.slot_address + SLOT_SIZE
        if self.kind in ("absolute", "call_indirect") and rip != self.slot_address:
            pass  # the CPU computed an absolute target: nothing to relocate
        elif rip in self._landings:
            regs["rip"] = self._landings[rip]
        elif self.kind != "syscall" or slot_rip:
            raise XolError(f"XOL step of '{self.instruction.text}' stopped at unexpected "
                           f"RIP {rip:#x} (slot {self.slot_address:#x})")
        completed = rip != self.slot_address
        if completed and self.kind in ("call", "call_indirect"):
            self._need(write, "write")(regs["rsp"],
                                       struct.pack("<Q", self.instruction.next_address))
        if completed and self.kind == "pushf":
            self._fix_pushed_flags(regs, token, read, write)
        if self.kind == "syscall":
            self._fix_syscall(regs, token)
        self._restore_scratch(regs, token)

    def abort(self, regs: dict, token: Token, read: Read | None = None,
              write: Write | None = None) -> None:
        """The step ended in a signal stop. If the instruction did not run (it faulted, or the
        signal came first, or a syscall is being restarted) RIP goes back to the probe address;
        if it had completed, this is `post` (pass read/write for calls and pushf)."""
        if regs["rip"] != self.slot_address:
            self.post(regs, token, read, write)
            return
        regs["rip"] = self.instruction.address
        if self.kind == "syscall":
            self._fix_syscall(regs, token)
        self._restore_scratch(regs, token)

    # -- helpers for the engine ----------------------------------------------------------------

    def in_progress(self, regs: dict) -> bool:
        """True when the single-step stopped with RIP still at the slot's start: a rep string
        op between iterations. The engine may step again instead of calling post (post maps
        it to the probe address, which is also correct but re-hits the breakpoint)."""
        return regs["rip"] == self.slot_address

    def original_address(self, address: int) -> int:
        """Map an address inside the slot (a RIP, or a SIGILL/SIGFPE si_addr, which the kernel
        sets to the faulting RIP) to the original stream; other addresses are returned as is."""
        if address in self._landings:
            return self._landings[address]
        if self.slot_address <= address < self.slot_address + SLOT_SIZE:
            return self.instruction.address
        return address

    # -- internals -------------------------------------------------------------------------------

    def _need(self, fn, what: str):
        if fn is None:
            raise XolError(f"fixing up '{self.instruction.text}' needs the {what} callback")
        return fn

    def _restore_scratch(self, regs: dict, token: Token) -> None:
        if self.scratch:
            regs[self.scratch] = token.scratch_value

    def _fix_syscall(self, regs: dict, token: Token) -> None:
        # The syscall instruction stored slot+len in RCX and RFLAGS (TF=1 from the step) in
        # R11. When RCX still holds slot+len the kernel returned normally (rt_sigreturn would
        # have restored both), so both are put back to what running in place gives.
        if regs["rcx"] == self._end:
            regs["rcx"] = self.instruction.next_address
            regs["r11"] = (regs["r11"] & ~_TF) | (token.rflags & _TF)

    def _fix_pushed_flags(self, regs: dict, token: Token, read, write) -> None:
        # pushf under single-step pushes TF=1 (a GDB 13 trap): give the image the program's TF.
        size = 2 if self.instruction.capstone.prefix[2] == 0x66 else 8
        rsp = regs["rsp"]
        fmt = "<H" if size == 2 else "<Q"
        (value,) = struct.unpack(fmt, self._need(read, "read")(rsp, size))
        fixed = (value & ~_TF) | (token.rflags & _TF)
        if fixed != value:
            self._need(write, "write")(rsp, struct.pack(fmt, fixed))


def _boost_refusal(kind: str, scratch: str | None) -> str | None:
    if scratch:
        return "needs a scratch register (the RIP-relative target is beyond 2 GiB of the slot)"
    if kind == "syscall":
        return "syscall: the kernel stores the slot address in RCX"
    if kind in ("call", "call_indirect"):
        return "call: pushes the slot address as its return address"
    return None


def _kind(cs) -> str:
    if cs.id == X.X86_INS_SYSCALL:
        return "syscall"
    if cs.id in (X.X86_INS_PUSHF, X.X86_INS_PUSHFQ, X.X86_INS_PUSHFD):
        return "pushf"
    if cs.group(X.X86_GRP_CALL):
        return "call" if refusals.is_relative_branch(cs) else "call_indirect"
    if refusals.is_relative_branch(cs):
        return "jump"
    if cs.group(X.X86_GRP_JUMP) or cs.group(X.X86_GRP_RET):
        return "absolute"
    return "plain"


def _pack_signed(value: int, size: int) -> bytes:
    return value.to_bytes(size, "little", signed=True)


def _fits(value: int, size: int) -> bool:
    bound = 1 << (8 * size - 1)
    return -bound <= value < bound


def prepare(insn: "emu.Instruction", slot_address: int) -> XolPlan:
    """Rewrite `insn` to run at `slot_address` (SLOT_SIZE-aligned); raise XolRefused."""
    reason = refusals.refusal_reason(insn)
    if reason:
        raise XolRefused(insn, reason)
    if slot_address % SLOT_SIZE or not 0 <= slot_address <= _M64 - SLOT_SIZE:
        raise XolError(f"XOL slot {slot_address:#x} is not {SLOT_SIZE}-byte aligned")
    cs = insn.capstone
    kind = _kind(cs)
    code = bytearray(insn.bytes)
    length = len(code)
    scratch, stub, target, notes = None, None, None, []

    if refusals.is_rip_relative(cs):
        scratch, note = _rewrite_rip_relative(cs, code, slot_address, insn)
        notes.append(note)
    if kind in ("jump", "call"):
        target = cs.operands[0].imm & _M64
        stub = slot_address + STUB_OFFSET
        rel = stub - (slot_address + length)
        code[cs.imm_offset:cs.imm_offset + cs.imm_size] = _pack_signed(rel, cs.imm_size)
        notes.append(f"branch to {target:#x} via the slot stub")

    slot = bytearray([_INT3]) * SLOT_SIZE
    slot[:length] = code
    if kind == "syscall":
        slot[length] = _NOP
    if stub is not None:
        # jmp qword ptr [rip+0] ; .quad target -- also correct if ever executed (boost).
        slot[STUB_OFFSET:STUB_OFFSET + _STUB_LEN] = (
            b"\xff\x25\x00\x00\x00\x00" + struct.pack("<Q", target))
    if kind == "syscall":
        notes.append("rcx/r11 mapped back after the step")
    elif kind in ("call", "call_indirect"):
        notes.append("pushed return address rewritten")
    elif kind == "pushf":
        notes.append("TF in the pushed flags restored")
    return XolPlan(insn, slot_address, bytes(slot), kind, scratch, stub, target,
                   "; ".join(notes) or "copied unchanged")


def _rewrite_rip_relative(cs, code: bytearray, slot: int, insn) -> tuple[str | None, str]:
    """Re-encode the disp32 for the slot if it reaches, else switch to a scratch base.

    Re-encode (same length, only disp32 changes):
        8b 05 <d>          mov eax, [rip+d]      at A  reads A+6+d
        8b 05 <d'>         mov eax, [rip+d']     at S, d' = A+6+d - (S+6)

    Scratch (uprobes' riprel_analyze): ModRM "00 reg 101" becomes "10 reg rrr" (disp32 kept),
    REX.B cleared / VEX3-EVEX-XOP inverted X and B set so rrr names a low register, and the
    scratch is loaded with the original next address A+len before the step:
        48 8b 05 <d>       mov rax, [rip+d]
        48 8b 86 <d>       mov rax, [rsi+d]      with rsi = A+7 (restored after)
        c5 fe 6f 0d <d>    vmovdqu ymm1, [rip+d]
        c5 fe 6f 8e <d>    vmovdqu ymm1, [rsi+d] (VEX2 has no B bit: nothing else to clear)
    With an address-size prefix (67, [eip+d]) the address wraps at 4 GiB, so a re-encoded
    disp32 always reaches (the sum is taken modulo 2**32).
    """
    m = cs.modrm_offset
    d = m + 1
    disp = int.from_bytes(code[d:d + 4], "little", signed=True)
    target = insn.next_address + disp
    slot_next = slot + len(code)
    if refusals.addr32(cs):
        new = (target - slot_next) & 0xFFFFFFFF
        code[d:d + 4] = new.to_bytes(4, "little")
        return None, "eip-relative disp32 re-encoded for the slot"
    new = (target & _M64) - slot_next
    if _fits(new, 4):
        code[d:d + 4] = _pack_signed(new, 4)
        return None, "rip-relative disp32 re-encoded for the slot"
    scratch = refusals.scratch_for(cs)
    if scratch is None:  # pragma: no cover - refusal_reason already refused it
        raise XolRefused(insn, "no free scratch register")
    name, number = scratch
    enc = refusals.encoding(bytes(code), m)
    if enc.kind == "rex":
        code[enc.offset] &= ~0x01 & 0xFF           # REX.B = 0: rm names rax..rdi
    elif enc.kind in ("vex3", "evex", "xop"):
        code[enc.offset + 1] |= 0x60               # inverted X and B = 1: no extension
    code[m] = 0x80 | (code[m] & 0x38) | number
    return name, f"rip-relative operand rewritten to [{name}+disp32], {name} = next address"

