"""Named regressions from the differential suite: each is one divergence (or oracle quirk)
that was found, decided against the Intel SDM, and fixed. The case is data (assembler text,
the exact encoding it must produce, registers, memory) replayed against emu AND Unicorn.
"""

from __future__ import annotations

import pytest

import emu
from emu.testing import compare, generate, unicorn_oracle
from emu.testing.generate import example_case

CODE = 0x401000
DATA = CODE + 0x2000  # writable data page of the standard layout
STACK_TOP = CODE + 0x8000  # default rsp of example_case


def replay(text: str, encoding: str, memory: dict[int, bytes] | None = None, address: int = CODE,
           **regs: int) -> generate.Case:
    """The case, checked to assemble to exactly `encoding` (hex) so the regression stays the
    same instruction even if the assembler changes."""
    case = example_case(text, address, memory=memory, **regs)
    assert case.code.hex() == encoding, f"{text!r} now assembles to {case.code.hex()}"
    return case


# ---- branches to non-canonical addresses: emu used to set rip; the CPU raises #GP at the
# branch itself, before pushing or popping anything (SDM Vol. 2A JMP, CALL; Vol. 2B RET:
# "#GP(0) If the target offset ... is non-canonical"). Unicorn does not check, so the oracle
# reports a non-canonical rip after a branch as an exception.

NON_CANONICAL = (0x0000800000000000, 0x7FFFFFFFFFFFFFFF, 0xFFFF7FFFFFFFFFFF)


@pytest.mark.parametrize("target", NON_CANONICAL)
@pytest.mark.parametrize("text, encoding, where", [
    ("jmp rax", "ffe0", "rax"),
    ("call rax", "ffd0", "rax"),
    ("jmp qword ptr [rip + 0x1ffa]", "ff25fa1f0000", "memory"),
    ("ret", "c3", "stack"),
    ("ret 0x10", "c21000", "stack"),
])
def test_branch_to_non_canonical_address_faults_with_state_unchanged(text, encoding, where, target):
    value = target.to_bytes(8, "little")
    memory = {DATA: value, STACK_TOP: value}
    case = replay(text, encoding, memory, **({"rax": target} if where == "rax" else {}))
    compare.check(case)
    out = compare.run_emu(case)
    assert out.fault == "fetch" and out.error is None  # error would say the state changed
    assert unicorn_oracle.run(case.state()).fault == "exception"


def test_branch_to_canonical_kernel_half_still_completes():
    """0xffff800000000000 is canonical: the branch completes and the fetch faults later."""
    case = replay("jmp rax", "ffe0", rax=0xFFFF800000000000)
    compare.check(case)
    assert compare.run_emu(case).regs["rip"] == 0xFFFF800000000000


# ---- oracle quirk: an instruction near the end of the code page, followed by bytes that
# straddle into the unmapped next page, was not executed at all by Unicorn (QEMU translated
# the whole block to the page end and gave up on the fetch). Fixed in the oracle by stopping
# the block at the next instruction.

def test_instruction_before_a_page_straddling_one_runs_on_the_oracle():
    address = CODE + 0xFF7  # adc al, al ends at 0xFF9; the movabs after it crosses 0x1000
    follower = generate.encode("movabs rax, 0x1122334455667788", address + 2)
    assert len(follower) == 10
    case = replay("adc al, al", "10c0", {address + 2: follower}, address=address, rax=0x80)
    out = unicorn_oracle.run(case.state())
    assert out.fault is None and out.regs["rip"] == address + 2
    compare.check(case)


# ---- Unicorn quirk: `lock neg` computes SF/PF/AF from the wrong value (QEMU's locked NEG
# path). SDM Vol. 2B NEG defines the flags from the result whatever the prefix, so the
# generator leaves `lock neg` out and this checks emu's `lock neg` against Unicorn's plain neg.

@pytest.mark.parametrize("value", [0x7F, 0x01, 0x55, 0x80, 0x00])
@pytest.mark.parametrize("text, encoding", [
    ("neg byte ptr [rax]", "f618"), ("neg dword ptr [rax]", "f718"),
])
def test_lock_neg_flags_are_those_of_neg(text, encoding, value):
    memory = {DATA: value.to_bytes(4, "little")}
    locked = replay("lock " + text, "f0" + encoding, memory, rax=DATA)
    plain = replay(text, encoding, memory, rax=DATA)
    emu_locked = compare.run_emu(locked)
    uc_plain = unicorn_oracle.run(plain.state())
    assert emu_locked.regs["rflags"] == uc_plain.regs["rflags"]
    assert emu_locked.memory[DATA] == uc_plain.memory[DATA]
    assert emu_locked.regs["rip"] - len(locked.code) == uc_plain.regs["rip"] - len(plain.code)


# ---- Unicorn runs at CPL 0, where POPF may change IF and IOPL. At CPL 3 (SDM Vol. 2B POPF,
# "protected mode, CPL > 0, CPL <= IOPL is false") IF and IOPL are left alone, VIP/VIF/VM
# too, and RF is cleared. The generator keeps IF=1, IOPL=0 in popped images; this checks the
# rest against the SDM directly and the user-changeable bits against Unicorn.

IF, IOPL, RF, VM, VIF, VIP, TF = 0x200, 0x3000, 0x10000, 0x20000, 0x80000, 0x100000, 0x100
POPF_USER = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | TF | 0x400 | 0x800 | 0x4000 | 0x40000 | 0x200000


@pytest.mark.parametrize("image", [0x0, 0xFFFFFFFFFFFFFFFF, IOPL | RF | VM | VIF | VIP, 0x3F7FD5])
def test_popf_at_user_privilege_leaves_if_and_iopl(image):
    case = replay("popfq", "9d", {STACK_TOP: image.to_bytes(8, "little")}, rflags=0x202)
    out = compare.run_emu(case)
    flags = out.regs["rflags"]
    assert flags & (IF | IOPL | VM | VIF | VIP) == IF  # as before the popf
    assert flags & RF == 0
    assert flags & POPF_USER == image & POPF_USER
    assert flags & 0x2
    same_privilege = replay("popfq", "9d", {STACK_TOP: ((image | IF) & ~IOPL).to_bytes(8, "little")},
                            rflags=0x202)
    uc = unicorn_oracle.run(same_privilege.state())
    assert uc.regs["rflags"] & POPF_USER == flags & POPF_USER


def test_everything_here_is_still_emulated():
    """A regression must keep exercising the emulator, not its refusal path."""
    for text in ("jmp rax", "call rax", "ret", "ret 0x10", "adc al, al", "lock neg byte ptr [rax]", "popfq",
                 "movdqa xmm1, xmmword ptr [rbx]", "pxor xmm1, xmmword ptr [rbx]"):
        assert emu.decode(example_case(text).code, CODE).emulatable, text


# ---- Unicorn quirk: RET imm16 with imm16 >= 0x8000 sign-extends the count (found by the
# long profile: `ret 0x8000` left rsp 32 KiB *below* where it started). SDM Vol. 2B RET:
# "RSP <- RSP + SRC" with SRC the unsigned imm16. The generator keeps imm16 < 0x8000; this
# checks emu above it against the SDM, and the rest of the instruction against Unicorn.

@pytest.mark.parametrize("release, encoding", [(0x8000, "c20080"), (0xFFFF, "c2ffff")])
def test_ret_imm16_is_unsigned(release, encoding):
    rsp = CODE + 0x7008
    back = (CODE + 0x10).to_bytes(8, "little")
    case = replay(f"ret {release:#x}", encoding, {rsp: back}, rsp=rsp)
    out = compare.run_emu(case)
    assert out.fault is None
    assert out.regs["rsp"] == rsp + 8 + release
    assert out.regs["rip"] == CODE + 0x10
    low = replay("ret 0x7fff", "c2ff7f", {rsp: back}, rsp=rsp)
    compare.check(low)


# ---- `call rdi` with a non-canonical rdi and a faulting push (found by the long profile):
# emu raises the #GP first, as the SDM's CALL pseudocode checks tempRIP before Push(RIP);
# Unicorn never checks and faults on the push. Both fault with the state unchanged, so the
# comparison accepts either kind when one of them is the non-canonical branch.

def test_call_to_non_canonical_with_faulting_push_faults_either_way():
    stack = CODE + 0x7000
    case = replay("call rdi", "ffd7", rdi=0x5555555555555555, rsp=stack)
    compare.check(case)
    out = compare.run_emu(case)
    assert out.fault == "fetch" and out.error is None
    assert unicorn_oracle.run(case.state()).fault == "write"


# ---- the undefined-flags table for shifts (found reviewing it against the SDM): CF was
# masked for SAR with large counts and not masked for SHL/SHR at count == width. SDM Vol. 2B
# SAL/SAR/SHL/SHR, Flags Affected: CF "is undefined for SHL and SHR instructions where the
# count is greater than or equal to the size (in bits) of the destination operand"; SAR's CF
# is always the last bit shifted out (the sign). Masking too much hides real divergences.

CF, OF, AF = 0x1, 0x800, 0x10


@pytest.mark.parametrize("text, cl, cf_undefined", [
    ("sar al, cl", 9, False), ("sar ax, cl", 31, False), ("sar al, 8", None, False),
    ("shl al, cl", 8, True), ("shr ax, cl", 16, True), ("shr al, 9", None, True),
    ("shl al, cl", 7, False), ("shr eax, cl", 31, False),
])
def test_shift_cf_is_undefined_exactly_where_the_sdm_says(text, cl, cf_undefined):
    regs = {"rcx": cl} if cl is not None else {}
    case = example_case(text, **regs)
    insn = emu.decode(case.code, CODE)
    mask = emu.undefined_flags(insn, dict(case.regs))
    assert bool(mask & CF) == cf_undefined
    assert mask & AF and mask & OF  # count > 1: AF and OF undefined
    for value in (0x80, 0x7F, 0x8000, 0x1, 0xFFFF):
        compare.check(example_case(text, rax=value, **regs))


# ---- rflags.AC (found when the emulator learned #AC from the native oracle): with AC set a
# misaligned 2/4/8-byte access faults at CPL 3 (SDM Vol. 3A 6.15; Linux runs with CR0.AM on,
# so #AC is SIGBUS). Unicorn runs at CPL 0 and never raises #AC, so the generator keeps AC
# only where every access is aligned; this checks the rule on both sides of it.

AC_FLAG = 0x40000


@pytest.mark.parametrize("text, encoding, regs", [
    ("mov eax, dword ptr [rbx]", "8b03", {"rbx": DATA + 1}),
    ("add qword ptr [rbx], rax", "480103", {"rbx": DATA + 4}),
    ("push rax", "50", {"rsp": STACK_TOP - 4}),
    ("ret", "c3", {"rsp": STACK_TOP - 2}),
])
def test_alignment_check_faults_misaligned_accesses_only_when_ac_is_set(text, encoding, regs):
    memory = {DATA: (CODE + 0x20).to_bytes(8, "little") * 2,
              STACK_TOP - 8: (CODE + 0x20).to_bytes(8, "little") * 2}
    checked = replay(text, encoding, memory, rflags=0x202 | AC_FLAG, **regs)
    out = compare.run_emu(checked)
    assert out.fault in ("read", "write") and out.error is None  # state unchanged
    unchecked = replay(text, encoding, memory, rflags=0x202, **regs)
    compare.check(unchecked)  # without AC the same access completes, as on Unicorn
    aligned = {k: v & ~7 for k, v in regs.items()}
    compare.check(replay(text, encoding, memory, rflags=0x202 | AC_FLAG, **aligned))


# ---- misaligned 16-byte SSE operands. SDM Vol. 2B MOVDQA (and MOVAPS, MOVAPD): "#GP(0) If a
# memory operand is not aligned on a 16-byte boundary, regardless of segment"; legacy-SSE
# PXOR/XORPS/XORPD xmm, m128 likewise (their exceptions are SDM Vol. 2A section 2.5's "Type 4"
# class: #GP(0) when a legacy-SSE memory operand is not 16-byte aligned). The native oracle in stepper/fuzz confirmed emu and
# the CPU agree; Unicorn does not raise this #GP, so the generator's aligned SSE families only
# aim at aligned addresses and the rule is checked here, on emu, against the SDM.

XMM_VALUE = 0x0123456789ABCDEFFEDCBA9876543210


@pytest.mark.parametrize("text, encoding, access", [
    ("movdqa xmm1, xmmword ptr [rbx]", "660f6f0b", "read"),
    ("movdqa xmmword ptr [rbx], xmm1", "660f7f0b", "write"),
    ("movaps xmm1, xmmword ptr [rbx]", "0f280b", "read"),
    ("movaps xmmword ptr [rbx], xmm1", "0f290b", "write"),
    ("movapd xmm1, xmmword ptr [rbx]", "660f280b", "read"),
    ("movapd xmmword ptr [rbx], xmm1", "660f290b", "write"),
    ("pxor xmm1, xmmword ptr [rbx]", "660fef0b", "read"),
    ("xorps xmm1, xmmword ptr [rbx]", "0f570b", "read"),
    ("xorpd xmm1, xmmword ptr [rbx]", "660f570b", "read"),
])
@pytest.mark.parametrize("misalign", [1, 8, 15])
def test_misaligned_16_byte_sse_operand_faults_with_state_unchanged(text, encoding, access, misalign):
    memory = {DATA: bytes(range(64))}
    case = replay(text, encoding, memory, rbx=DATA + 16 + misalign, xmm1=XMM_VALUE)
    out = compare.run_emu(case)
    assert out.fault == access and out.fault_address == DATA + 16 + misalign
    assert out.error is None  # error would say the state changed before the fault
    aligned = replay(text, encoding, memory, rbx=DATA + 16, xmm1=XMM_VALUE)
    compare.check(aligned)  # the same instruction on an aligned address runs, as on Unicorn


@pytest.mark.parametrize("text, encoding", [
    ("movdqu xmm1, xmmword ptr [rbx]", "f30f6f0b"),
    ("movups xmmword ptr [rbx], xmm1", "0f110b"),
    ("movupd xmm1, xmmword ptr [rbx]", "660f100b"),
])
def test_unaligned_sse_moves_take_any_address(text, encoding):
    """SDM Vol. 2B MOVDQU/MOVUPS/MOVUPD: no alignment requirement (the contrast to the above)."""
    for misalign in (1, 8, 15):
        compare.check(replay(text, encoding, {DATA: bytes(range(64))},
                             rbx=DATA + 16 + misalign, xmm1=XMM_VALUE))
