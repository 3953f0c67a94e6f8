"""The XOL planner (stepper.xol) against Unicorn, without ptrace.

The oracle: Unicorn runs the original instruction in place from a state; a second Unicorn runs
the plan's slot from the same state after `pre`, with TF set as PTRACE_SINGLESTEP sets it
(Unicorn then raises the debug trap after the instruction, as the CPU does), clears TF as the
kernel does, and applies `post`. Registers (general, rip, rflags, fs/gs base, xmm) and every
writable page must then be identical. Instructions Unicorn cannot run (AVX, AVX-512) are
checked by decoding the slot bytes with capstone and comparing each operand's value or
effective address. Encodings come from keystone, or GNU as where keystone lacks a form.
"""

from __future__ import annotations

import struct

import capstone
import pytest
import unicorn as uc
from capstone import x86_const as CX
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unicorn import x86_const as UX

from emu.registers import GPR
from stepper import xol
from stepper.errors import StepperError
from tests.support.machine import (CODE_PAGE, DATA, DATA_SIZE, FAR_SLOT, GPRS, MEMORY_FAULTS,
                                   NEAR_SLOT, ORIG, RSP, SLOTS, TF, decode, gas, gas_riprel,
                                   initial_regs, ks, new_machine, observable, pattern, regs_of,
                                   riprel)
from tests.support.machine import diff as _diff

_cs = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
_cs.detail = True


def step(mu: uc.Uc, start: int) -> str:
    """Run one instruction from `start`: 'trap' (single-step trap taken), 'done' or 'fault'
    (a memory fault, or a CPU exception such as #DE: any interrupt other than #DB)."""
    seen: list[int] = []

    def on_interrupt(u, intno, _):
        seen.append(intno)
        u.emu_stop()

    hook = mu.hook_add(uc.UC_HOOK_INTR, on_interrupt)
    try:
        mu.emu_start(start, 0, count=1)
    except uc.UcError as e:
        if e.errno in MEMORY_FAULTS:
            return "fault"
        raise
    finally:
        mu.hook_del(hook)
    if any(n != 1 for n in seen):
        return "fault"
    return "trap" if seen else "done"


def in_place(code: bytes, regs: dict, data: bytes) -> tuple[str, dict]:
    mu = new_machine(regs, data, {ORIG: code})
    outcome = step(mu, ORIG)
    return outcome, observable(mu, regs_of(mu))


def out_of_line(code: bytes, regs: dict, data: bytes, slot: int) -> tuple[str, dict, xol.XolPlan]:
    insn = decode(code)
    plan = xol.prepare(insn, slot)
    assert len(plan.code) == xol.SLOT_SIZE
    live = dict(regs)
    token = plan.pre(live)
    assert live["rip"] == slot
    live["rflags"] |= TF                       # PTRACE_SINGLESTEP
    mu = new_machine(live, data, {ORIG: b"\xcc", slot: plan.code})
    outcome = step(mu, slot)
    after = regs_of(mu)
    after["rflags"] &= ~TF                     # the kernel clears the TF it forced

    def read(address: int, size: int) -> bytes:
        return bytes(mu.mem_read(address, size))

    def write(address: int, data_: bytes) -> None:
        mu.mem_write(address, data_)

    if outcome == "fault":
        plan.abort(after, token)
    else:
        assert outcome == "trap", "the slot instruction must end in the single-step trap"
        if plan.in_progress(after):
            assert after["rip"] == slot
        plan.post(after, token, read, write)
    return outcome, observable(mu, after), plan


def assert_equivalent(code: bytes, slot: int, regs: dict | None = None,
                      data: bytes | None = None) -> xol.XolPlan:
    regs = initial_regs(regs)
    data = pattern() if data is None else data
    expected_outcome, expected = in_place(code, regs, data)
    outcome, got, plan = out_of_line(code, regs, data, slot)
    assert (outcome == "fault") == (expected_outcome == "fault")
    assert got["regs"] == expected["regs"], _diff(got["regs"], expected["regs"])
    assert got["xmm"] == expected["xmm"]
    assert got["data"] == expected["data"]
    assert got["stack"] == expected["stack"]
    return plan


# -------------------------------------------------------------------- rip-relative memory --

LOADS_STORES = [
    "mov al, byte ptr {m}", "mov byte ptr {m}, cl", "mov byte ptr {m}, 0x5a",
    "mov ax, word ptr {m}", "mov word ptr {m}, dx", "add word ptr {m}, 0x1234",
    "mov eax, dword ptr {m}", "mov dword ptr {m}, esi", "mov dword ptr {m}, 0x12345678",
    "mov rax, qword ptr {m}", "mov qword ptr {m}, r13", "mov r13, qword ptr {m}",
    "mov rsi, qword ptr {m}", "mov rdi, qword ptr {m}", "mov qword ptr {m}, rsi",
    "add qword ptr {m}, 0x11", "inc dword ptr {m}", "lea rbx, {m}", "lea rsi, {m}",
    "movzx esi, byte ptr {m}", "movsx rdi, word ptr {m}", "cmp qword ptr {m}, rbx",
    "movdqa xmm1, xmmword ptr {m}", "movdqa xmmword ptr {m}, xmm9",
    "movups xmm12, xmmword ptr {m}", "movups xmmword ptr {m}, xmm3",
    "mov rax, qword ptr fs:{m}", "lock xadd qword ptr {m}, rcx", "xchg qword ptr {m}, rdx",
]


@pytest.mark.parametrize("where", ["near", "far"])
@pytest.mark.parametrize("template", LOADS_STORES)
def test_rip_relative_loads_and_stores(template, where):
    code = riprel(template, DATA + 0x340)
    plan = assert_equivalent(code, SLOTS[where])
    if where == "near":
        assert plan.scratch is None, "a reachable slot re-encodes the displacement"
    else:
        assert plan.scratch is not None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(template=st.sampled_from(LOADS_STORES),
       offset=st.integers(0, DATA_SIZE - 16).map(lambda x: x & ~15),
       slot=st.one_of(st.integers(0x1000, 0x7FFFFFFF), st.integers(2**33, 2**46))
       .map(lambda a: a & ~(xol.SLOT_SIZE - 1)),
       values=st.lists(st.integers(0, 2**64 - 1), min_size=16, max_size=16),
       flags=st.integers(0, 0xFFF).map(lambda f: (f & 0x8D5) | 0x202),
       seed=st.integers(0, 255))
def test_rip_relative_any_slot_any_state(template, offset, slot, values, flags, seed):
    """Property: wherever the slot is (near or far) and whatever the registers, the step
    out of line leaves exactly what the step in place leaves."""
    if abs(slot - ORIG) < 0x10000:  # keep the slot page off the code page
        slot += 0x100000
    regs = dict(zip(GPRS, values))
    regs.update(rsp=RSP, rflags=flags)
    assert_equivalent(riprel(template, DATA + offset), slot, regs, pattern(seed))


def test_far_rip_relative_fault_maps_rip_back_and_restores_scratch():
    """A RIP-relative access that faults: the CPU faults inside the slot with the scratch
    loaded; abort puts back the original RIP and scratch, as if it faulted in place."""
    code = riprel("mov rax, qword ptr {m}", 0x90000000)   # unmapped
    plan = assert_equivalent(code, FAR_SLOT)
    assert plan.scratch == "rsi"


def test_slot_bytes_show_the_rewrite():
    """The documented rewrite, byte for byte: 8b 05 disp -> 8b 86 disp (rsi base) far,
    disp re-encoded near; REX.B cleared."""
    code = riprel("mov eax, dword ptr {m}", DATA)
    far = xol.prepare(decode(code), FAR_SLOT)
    assert far.code[:6] == bytes([0x8B, 0x86]) + code[2:6]
    near = xol.prepare(decode(code), NEAR_SLOT)
    assert near.code[:2] == code[:2]
    assert struct.unpack("<i", near.code[2:6])[0] == DATA - (NEAR_SLOT + 6)
    code = riprel("mov r13, qword ptr {m}", DATA)        # REX.WR; with REX.B set too:
    far = xol.prepare(decode(code), FAR_SLOT)
    assert far.code[0] & 1 == 0 and far.code[2] == 0x80 | (code[2] & 0x38) | 6


def test_boost_refusal():
    near = xol.prepare(decode(riprel("mov eax, dword ptr {m}", DATA)), NEAR_SLOT)
    far = xol.prepare(decode(riprel("mov eax, dword ptr {m}", DATA)), FAR_SLOT)
    assert near.boost_refusal is None and "scratch" in far.boost_refusal
    assert "RCX" in xol.prepare(decode(ks("syscall")), NEAR_SLOT).boost_refusal
    assert "call" in xol.prepare(decode(ks("call rax")), NEAR_SLOT).boost_refusal


def test_slot_address_must_be_aligned():
    with pytest.raises(StepperError):
        xol.prepare(decode(ks("nop")), FAR_SLOT + 1)


def test_rep_string_op_between_iterations_restarts_from_the_probe():
    """rep movsb single-steps one iteration at a time; RIP stays at the slot, which maps to
    the probe address with the updated rsi/rdi/rcx, exactly as an in-place step leaves."""
    regs = {"rsi": DATA, "rdi": DATA + 0x100, "rcx": 5}
    plan = assert_equivalent(ks("rep movsb byte ptr [rdi], byte ptr [rsi]"), FAR_SLOT, regs)
    live = initial_regs(regs)
    plan.pre(live)
    assert plan.in_progress(live)


def test_rep_string_op_stepped_to_completion_in_the_slot():
    """The engine's way (strategies.XolOps): while `in_progress`, step the slot again; then
    post. The result equals running the whole rep movsb in place."""
    regs = initial_regs({"rsi": DATA, "rdi": DATA + 0x100, "rcx": 7, "rflags": 0x202})
    code = ks("rep movsb byte ptr [rdi], byte ptr [rsi]")
    mu = new_machine(regs, pattern(), {ORIG: code})
    mu.emu_start(ORIG, ORIG + len(code))
    expected = observable(mu, regs_of(mu))

    plan = xol.prepare(decode(code), FAR_SLOT)
    live = dict(regs)
    token = plan.pre(live)
    mu = new_machine(dict(live, rflags=live["rflags"] | TF), pattern(), {FAR_SLOT: plan.code})
    steps = 0
    while True:
        assert step(mu, mu.reg_read(UX.UC_X86_REG_RIP)) == "trap"
        steps += 1
        after = regs_of(mu)
        after["rflags"] &= ~TF
        if not plan.in_progress(after):
            break
    assert steps == 7
    plan.post(after, token, None, None)
    assert observable(mu, after) == expected


# --------------------------------------------------- scratch vs implicit register users --

# What each instruction uses besides its RIP-relative operand, from the Intel SDM (an oracle
# independent of capstone): the scratch must be none of these.
IMPLICIT_USERS = [
    ("shl qword ptr {m}, cl", {"rcx"}),
    ("sar dword ptr {m}, cl", {"rcx"}),
    ("shld qword ptr {m}, rbx, cl", {"rcx", "rbx"}),
    ("cmpxchg qword ptr {m}, rbx", {"rax", "rbx"}),
    ("lock cmpxchg qword ptr {m}, rsi", {"rax", "rsi"}),
    ("mul qword ptr {m}", {"rax", "rdx"}),
    ("imul qword ptr {m}", {"rax", "rdx"}),
    ("div dword ptr {m}", {"rax", "rdx"}),
    ("idiv byte ptr {m}", {"rax"}),
    ("cmpxchg8b qword ptr {m}", {"rax", "rbx", "rcx", "rdx"}),
    ("cmpxchg16b xmmword ptr {m}", {"rax", "rbx", "rcx", "rdx"}),
    ("lock cmpxchg16b xmmword ptr {m}", {"rax", "rbx", "rcx", "rdx"}),
    ("mulx rsi, rdi, qword ptr {m}", {"rdx", "rsi", "rdi"}),
    ("mulx rbx, rcx, qword ptr {m}", {"rdx", "rbx", "rcx"}),
    ("pcmpestri xmm1, xmmword ptr {m}, 3", {"rax", "rdx", "rcx"}),
    ("pcmpestrm xmm1, xmmword ptr {m}, 3", {"rax", "rdx"}),
    ("pcmpistri xmm1, xmmword ptr {m}, 3", {"rcx"}),
    ("bt qword ptr {m}, rsi", {"rsi"}),
    ("push qword ptr {m}", {"rsp"}),
    ("xadd qword ptr {m}, rdi", {"rdi"}),
]


@pytest.mark.parametrize("template,forbidden", IMPLICIT_USERS)
def test_scratch_avoids_registers_the_instruction_uses(template, forbidden):
    code = riprel(template, DATA + 0x400)
    plan = xol.prepare(decode(code), FAR_SLOT)
    assert plan.scratch is not None and plan.scratch not in forbidden | {"rsp"}


@pytest.mark.parametrize("template,forbidden", IMPLICIT_USERS)
def test_implicit_register_users_run_identically(template, forbidden):
    regs = {"rax": 0x1234, "rdx": 0x7, "rcx": 9, "rbx": 0x55, "rsi": 3, "rdi": 2}
    for where in ("near", "far"):
        assert_equivalent(riprel(template, DATA + 0x400), SLOTS[where], regs)


def test_cmpxchg16b_uses_rsi_even_when_modrm_reg_is_one():
    """cmpxchg16b is 0f c7 /1: GDB's ModRM-based guess picks rbx or rcx. We never do."""
    plan = xol.prepare(decode(riprel("cmpxchg16b xmmword ptr {m}", DATA)), FAR_SLOT)
    assert plan.scratch == "rsi"


@pytest.mark.parametrize("template,forbidden", IMPLICIT_USERS)
def test_registers_used_covers_the_sdm_list(template, forbidden):
    assert xol.registers_used(decode(riprel(template, DATA))) >= forbidden


def test_capstone_gaps_are_covered():
    """capstone 5 omits pcmpestrm's implicit rax/rdx from regs_access(); the planner adds
    them, so a stale capstone table cannot make us pick them."""
    insn = decode(riprel("pcmpestrm xmm1, xmmword ptr {m}, 3", DATA))
    names = {insn.capstone.reg_name(r) for group in insn.capstone.regs_access() for r in group}
    assert not names & {"eax", "rax", "edx", "rdx"}  # the gap this guards against
    assert xol.registers_used(insn) >= {"rax", "rdx"}
    assert xol.prepare(insn, FAR_SLOT).scratch not in {"rax", "rdx", "rcx"}


@pytest.mark.parametrize("template", ["rex.B mov eax, dword ptr {m}",
                                      "rex.WB add eax, dword ptr {m}",
                                      "rex.B mov dword ptr {m}, ecx"])
def test_rex_b_is_cleared_for_the_scratch_base(template):
    """REX.B does nothing to a RIP-relative operand but would turn [rsi+d] into [r14+d]:
    GNU as can emit it (rex.B), and the slot must clear it."""
    code = gas_riprel(template, DATA + 0x80)
    assert code[0] & 1
    plan = assert_equivalent(code, FAR_SLOT, {"r14": DATA + 0x1000})
    assert plan.code[0] & 1 == 0


# ------------------------------------------------------------------ VEX / EVEX (decoded) --

def operand_values(code: bytes, address: int, regs: dict) -> tuple:
    """(mnemonic, operands) with each memory operand reduced to (segment, size, address)."""
    cs = next(_cs.disasm(code, address, 1))
    values = []
    for op in cs.operands:
        if op.type == CX.X86_OP_MEM:
            if op.mem.base == CX.X86_REG_RIP:
                base = address + cs.size
            elif op.mem.base:
                base = regs[cs.reg_name(op.mem.base)]
            else:
                base = 0
            assert op.mem.index == 0
            values.append(("mem", op.mem.segment, op.size, (base + op.mem.disp) % 2**64))
        elif op.type == CX.X86_OP_REG:
            values.append(("reg", cs.reg_name(op.reg), op.access))
        else:
            values.append(("imm", op.imm))
    return cs.mnemonic, cs.size, tuple(values)


VEX_EVEX = [
    "vmovdqu ymm1, ymmword ptr {m}", "vmovdqu ymmword ptr {m}, ymm14",
    "vmovdqa ymm9, ymmword ptr {m}", "vmovups xmm15, xmmword ptr {m}",
    "vpaddd ymm3, ymm12, ymmword ptr {m}", "vfmadd231ps xmm1, xmm2, xmmword ptr {m}",
    "vblendvps xmm1, xmm2, xmmword ptr {m}, xmm3", "vpcmpestri xmm1, xmmword ptr {m}, 3",
    "vpaddd zmm1, zmm2, zmmword ptr {m}", "vmovdqu64 zmm17, zmmword ptr {m}",
    "vmovdqu32 zmmword ptr {m}, zmm30", "vaddps zmm20 {{k1}}, zmm21, zmmword ptr {m}",
    "mulx r9, r10, qword ptr {m}", "shrx rax, qword ptr {m}, rcx", "andn r8, r9, qword ptr {m}",
]


@pytest.mark.parametrize("where", ["near", "far"])
@pytest.mark.parametrize("template", VEX_EVEX)
def test_vex_evex_rewrite_keeps_every_operand(template, where):
    """The slot instruction decodes to the same mnemonic, length and operands, and its memory
    operand, with the pre()'d registers, has the original absolute address."""
    code = riprel(template, DATA + 0x1C0)
    insn = decode(code)
    plan = xol.prepare(insn, SLOTS[where])
    regs = initial_regs()
    plan.pre(regs)
    assert operand_values(plan.code, plan.slot_address, regs) == \
        operand_values(code, ORIG, initial_regs())
    assert (plan.scratch is None) == (where == "near")
    if plan.scratch:
        used = {GPR[r][0] for g in insn.capstone.regs_access() for r in g if r in GPR}
        assert plan.scratch not in used


@pytest.mark.parametrize("template", ["{{vex3}} vmovdqu ymm1, ymmword ptr {m}",
                                      "{{vex3}} vpaddd ymm2, ymm3, ymmword ptr {m}",
                                      "{{evex}} vpaddd xmm2, xmm3, xmmword ptr {m}"])
def test_forced_vex3_evex_forms(template):
    """VEX3/EVEX where a 2-byte VEX would do (GNU as {vex3}/{evex}): the B/X bits live in
    the byte after c4/62 and are left meaning 'no extension' in the slot."""
    code = gas_riprel(template, DATA + 0x100)
    plan = xol.prepare(decode(code), FAR_SLOT)
    regs = initial_regs()
    plan.pre(regs)
    assert operand_values(plan.code, FAR_SLOT, regs) == operand_values(code, ORIG, initial_regs())
    assert plan.code[1] & 0x60 == 0x60


def test_vex3_b_bit_rewrite_runs_in_unicorn():
    """mulx is VEX3-encoded and Unicorn runs it: the far rewrite (VEX.B/X set) is exact."""
    regs = {"rdx": 0xFFFF0000FFFF, "rbx": 1, "rcx": 2}
    assert_equivalent(riprel("mulx r9, r10, qword ptr {m}", DATA + 0x40), FAR_SLOT, regs)
    assert_equivalent(riprel("mulx rbx, rcx, qword ptr {m}", DATA + 0x40), FAR_SLOT, regs)


# ---------------------------------------------------------------- branches, calls, returns --

BRANCH_REGS = {"rax": CODE_PAGE + 0x800, "rcx": 3}


@pytest.mark.parametrize("where", ["near", "far"])
@pytest.mark.parametrize("text", [
    "call 0x401800", "call 0x400010", "jmp 0x401800", "jmp 0x401240", "jmp 0x401200",
    "call rax", "jmp rax", "ret", "ret 16", "push qword ptr [rsp + 8]", "pop rbx",
])
def test_branches_calls_returns(text, where):
    plan = assert_equivalent(ks(text), SLOTS[where], dict(BRANCH_REGS))
    if text.startswith("call"):
        assert plan.kind in ("call", "call_indirect")


@pytest.mark.parametrize("where", ["near", "far"])
@pytest.mark.parametrize("template", ["call qword ptr {m}", "jmp qword ptr {m}",
                                      "push qword ptr {m}"])
def test_indirect_through_rip_relative_pointer(template, where):
    data = bytearray(pattern())
    data[0x200:0x208] = struct.pack("<Q", CODE_PAGE + 0xA00)
    assert_equivalent(riprel(template, DATA + 0x200), SLOTS[where], None, bytes(data))


# Flag values that make each condition true or false: ZF (0x40), CF (0x1), SF/OF.
@pytest.mark.parametrize("where", ["near", "far"])
@pytest.mark.parametrize("flags", [0x202, 0x242, 0x203, 0xA82])
@pytest.mark.parametrize("text", ["je 0x401240", "jne 0x401240", "jb 0x401800",
                                  "jg 0x400100", "jae 0x401200", "je 0x401238"])
def test_conditional_jumps_taken_and_not_taken(text, flags, where):
    code = ks(text)
    plan = assert_equivalent(code, SLOTS[where], {"rflags": flags})
    assert plan.kind == "jump"


CONDITIONS = ("o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge",
              "le", "g")


@settings(max_examples=40, deadline=None)
@given(form=st.sampled_from([f"j{cc}" for cc in CONDITIONS] + ["jmp", "call"]),
       target=st.integers(CODE_PAGE, CODE_PAGE + 0x1FFF),
       flags=st.integers(0, 0xFFF).map(lambda f: (f & 0x8D5) | 0x202),
       far=st.booleans())
def test_relative_branches_any_target_any_flags(form, target, flags, far):
    """Property: a relative jcc/jmp/call (rel8 or rel32, as the assembler picks) steps out of
    line exactly as in place, taken or not, from a near or far slot."""
    assert_equivalent(ks(f"{form} {target:#x}"), FAR_SLOT if far else NEAR_SLOT,
                      {"rflags": flags})


@pytest.mark.parametrize("rcx", [0, 1, 5])
@pytest.mark.parametrize("text", ["loop 0x401240", "jrcxz 0x401240", "loopne 0x401200"])
def test_loop_and_jrcxz(text, rcx):
    assert_equivalent(ks(text), FAR_SLOT, {"rcx": rcx, "rflags": 0x202})


def test_rel32_jcc_both_ways_maps_through_the_stub():
    insn = decode(ks("jne 0x7fff0000"))          # rel32, far from the slot
    plan = xol.prepare(insn, FAR_SLOT)
    regs = initial_regs()
    token = plan.pre(regs)
    regs["rip"] = FAR_SLOT + xol.STUB_OFFSET                  # the stub: taken
    plan.post(regs, token, None, None)
    assert regs["rip"] == 0x7FFF0000
    regs = initial_regs()
    token = plan.pre(regs)
    regs["rip"] = FAR_SLOT + insn.length         # fall through
    plan.post(regs, token, None, None)
    assert regs["rip"] == insn.next_address


@pytest.mark.parametrize("text", ["jne 0x401800", "call 0x400010", "loop 0x401240"])
def test_stub_jumps_to_the_target_when_executed(text):
    """The stub is real code (jmp [rip+0]; .quad target), so a slot run without the trap
    (boost) still reaches the target."""
    plan = xol.prepare(decode(ks(text)), FAR_SLOT)
    regs = initial_regs()
    plan.pre(regs)
    mu = new_machine(regs, pattern(), {FAR_SLOT: plan.code})
    assert step(mu, FAR_SLOT + xol.STUB_OFFSET) == "done"
    assert mu.reg_read(UX.UC_X86_REG_RIP) == plan.instruction.capstone.operands[0].imm


def test_call_faulting_on_the_stack_aborts_to_the_probe():
    """call rel32 with rsp on an unmapped page: the genuine fault, then abort leaves RIP at
    the probe and memory untouched, as the fault in place does."""
    assert_equivalent(ks("call 0x401800"), FAR_SLOT, {"rsp": 0x90000000})
    assert_equivalent(riprel("call qword ptr {m}", DATA), FAR_SLOT, {"rsp": 0x90000000})
    assert_equivalent(ks("ret"), FAR_SLOT, {"rsp": 0x90000000})


def test_call_post_needs_the_write_callback():
    insn = decode(ks("call 0x401800"))
    plan = xol.prepare(insn, FAR_SLOT)
    regs = initial_regs()
    token = plan.pre(regs)
    regs["rip"] = FAR_SLOT + xol.STUB_OFFSET
    with pytest.raises(xol.XolError):
        plan.post(regs, token, None, None)


# ----------------------------------------------------------------------- pushf / syscall --

@pytest.mark.parametrize("text", ["pushfq", "pushf"])
def test_pushf_does_not_leak_the_single_step_tf(text):
    """GDB 13 trap: pushf single-stepped pushes TF=1. The plan puts the program's TF back."""
    plan = assert_equivalent(ks(text), FAR_SLOT, {"rflags": 0x246})
    assert plan.kind == "pushf"


def test_syscall_rcx_r11_mapped_back():
    insn = decode(ks("syscall"))
    plan = xol.prepare(insn, FAR_SLOT)
    assert plan.code[2] == 0x90
    regs = initial_regs({"rax": 39, "rflags": 0x246})
    before = dict(regs)
    token = plan.pre(regs)
    assert regs["rip"] == FAR_SLOT
    # What the CPU and the kernel leave after a stepped syscall: rcx = return address (the
    # slot), r11 = rflags as the syscall saw them (TF set by the step), rax = result.
    regs.update(rip=FAR_SLOT + 2, rcx=FAR_SLOT + 2, r11=0x246 | TF, rax=1234)
    plan.post(regs, token, None, None)
    assert regs == dict(before, rip=ORIG + 2, rcx=ORIG + 2, r11=0x246, rax=1234)


def test_syscall_late_trap_after_the_nop():
    insn = decode(ks("syscall"))
    plan = xol.prepare(insn, FAR_SLOT)
    regs = initial_regs()
    token = plan.pre(regs)
    regs.update(rip=FAR_SLOT + 3, rcx=FAR_SLOT + 2, r11=0x202 | TF)
    plan.post(regs, token, None, None)
    assert (regs["rip"], regs["rcx"], regs["r11"]) == (ORIG + 2, ORIG + 2, 0x202)


def test_syscall_that_moves_rip_is_left_alone():
    """rt_sigreturn (or execve) sets every register itself: nothing is relocated."""
    plan = xol.prepare(decode(ks("syscall")), FAR_SLOT)
    regs = initial_regs()
    token = plan.pre(regs)
    regs.update(rip=0x401777, rcx=0x5555, r11=0x346)
    plan.post(regs, token, None, None)
    assert (regs["rip"], regs["rcx"], regs["r11"]) == (0x401777, 0x5555, 0x346)


def test_syscall_restart_on_signal_goes_back_to_the_probe():
    """A signal interrupting a restartable syscall: the kernel rewinds RIP to the syscall (the
    slot); abort moves it to the probe and gives RCX the value it has in place."""
    plan = xol.prepare(decode(ks("syscall")), FAR_SLOT)
    regs = initial_regs({"rflags": 0x202})
    token = plan.pre(regs)
    regs.update(rip=FAR_SLOT, rcx=FAR_SLOT + 2, r11=0x302)
    plan.abort(regs, token)
    assert (regs["rip"], regs["rcx"], regs["r11"]) == (ORIG, ORIG + 2, 0x202)


def test_abort_after_completion_is_post():
    """A signal stop that arrives after the instruction completed (rip past it): abort must not
    re-run it, it fixes up as post does."""
    code = riprel("mov qword ptr {m}, rax", DATA)
    plan = xol.prepare(decode(code), FAR_SLOT)
    regs = initial_regs()
    original_rsi = regs["rsi"]
    token = plan.pre(regs)
    regs["rip"] = FAR_SLOT + len(code)
    plan.abort(regs, token)
    assert regs["rip"] == ORIG + len(code) and regs["rsi"] == original_rsi


def test_original_address_maps_slot_addresses_only():
    plan = xol.prepare(decode(ks("ud2")), FAR_SLOT)
    assert plan.original_address(FAR_SLOT) == ORIG
    assert plan.original_address(FAR_SLOT + 2) == ORIG + 2
    assert plan.original_address(0x1234) == 0x1234


def test_eip_relative_is_re_encoded_modulo_4gib():
    """[eip+d] (67 prefix) wraps at 4 GiB, so the disp32 can always be re-encoded."""
    code = gas("mov eax, dword ptr [eip+0x100]")
    insn = decode(code)
    plan = xol.prepare(insn, FAR_SLOT)
    assert plan.scratch is None
    new = struct.unpack("<I", plan.code[3:7])[0]
    assert (FAR_SLOT + len(code) + new) % 2**32 == (ORIG + len(code) + 0x100) % 2**32
