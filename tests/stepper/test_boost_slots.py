"""Boost slots (stepper.strategies.boost) against Unicorn, without ptrace.

The oracle: Unicorn runs the original instruction in place until RIP leaves it (a rep string
op runs all its iterations); a second Unicorn runs the boost slot from the same registers with
RIP at the slot and *no* trap flag, until RIP leaves the slot by itself (through the jump back
or a branch stub). Registers, xmm, data and stack must be identical; a fault inside the slot,
mapped back with the plan, must show the original RIP. Which instructions boost, and why the
others do not, is checked on keystone encodings.
"""

from __future__ import annotations

import capstone
import pytest
import unicorn as uc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stepper import xol
from stepper.strategies import boost
from tests.support.machine import (DATA, DATA_SIZE, FAR_SLOT, GPRS, MEMORY_FAULTS, NEAR_SLOT,
                                   ORIG, RSP, decode, initial_regs, ks, new_machine, observable,
                                   pattern, regs_of, riprel)
from tests.support.machine import diff as _diff

_cs = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)


def run_until_out(mu: uc.Uc, start: int, lo: int, hi: int, limit: int = 1024) -> str:
    """Step from `start` until RIP leaves [lo, hi): 'done', or 'fault' (RIP stays put)."""
    rip = start
    for _ in range(limit):
        try:
            mu.emu_start(rip, 0, count=1)
        except uc.UcError as e:
            if e.errno in MEMORY_FAULTS:
                return "fault"
            raise
        rip = mu.reg_read(uc.x86_const.UC_X86_REG_RIP)
        if not lo <= rip < hi:
            return "done"
    raise AssertionError(f"still inside [{lo:#x}, {hi:#x}) after {limit} steps")


def boosted(code: bytes, slot: int) -> xol.XolPlan:
    insn = decode(code)
    plan = xol.prepare(insn, slot)
    assert boost.boost_refusal(insn, plan) is None
    return plan


def assert_boost_equivalent(code: bytes, slot: int, regs: dict | None = None,
                            data: bytes | None = None) -> xol.XolPlan:
    regs = initial_regs(regs)
    data = pattern() if data is None else data
    mu = new_machine(regs, data, {ORIG: code})
    expected_outcome = run_until_out(mu, ORIG, ORIG, ORIG + len(code))
    expected = observable(mu, regs_of(mu))

    plan = boosted(code, slot)
    mu = new_machine(dict(regs, rip=slot), data, {ORIG: b"\xcc", slot: boost.slot_code(plan)})
    outcome = run_until_out(mu, slot, slot, slot + xol.SLOT_SIZE)
    after = regs_of(mu)
    if outcome == "fault":  # what Boost.map_back does at the stop the fault causes
        after["rip"] = plan.original_address(after["rip"])
    got = observable(mu, after)
    assert outcome == expected_outcome
    assert got["regs"] == expected["regs"], _diff(got["regs"], expected["regs"])
    assert got["xmm"] == expected["xmm"]
    assert got["data"] == expected["data"]
    assert got["stack"] == expected["stack"]
    return plan


BOOSTABLE = [
    "mov rax, qword ptr {m}", "mov qword ptr {m}, r13", "add qword ptr {m}, 0x11",
    "lea rsi, {m}", "movdqa xmm1, xmmword ptr {m}", "movups xmmword ptr {m}, xmm3",
    "lock xadd qword ptr {m}, rcx", "xchg qword ptr {m}, rdx", "cmp qword ptr {m}, rbx",
    "mov rax, qword ptr fs:{m}",
]
PLAIN = ["pushfq", "push rbx", "pop rdx", "imul rax, rbx, 7", "cpuid",
         "bswap r9", "cmovne rax, rcx", "ret", "ret 8", "jmp rax", "jmp qword ptr [rsp]"]


@pytest.mark.parametrize("template", BOOSTABLE)
def test_rip_relative_boosted(template):
    plan = assert_boost_equivalent(riprel(template, DATA + 0x340), NEAR_SLOT)
    assert plan.scratch is None


@pytest.mark.parametrize("text", PLAIN)
def test_plain_instructions_boosted(text):
    assert_boost_equivalent(ks(text), NEAR_SLOT)


@pytest.mark.parametrize("taken", [True, False])
@pytest.mark.parametrize("text", ["jne {t}", "jmp {t}", "loop {t}", "jrcxz {t}"])
def test_relative_branches_leave_through_stub_or_jump_back(text, taken):
    """A taken branch leaves by the stub's jmp [rip+0], a fall-through by the jump back."""
    code = ks(text.format(t=hex(ORIG + 0x40)))
    flags = 0x202 if taken else 0x242  # ZF clear: jne taken
    rcx = 5 if taken else 1          # loop: taken unless rcx becomes 0
    if text.startswith("jrcxz"):
        rcx = 0 if taken else 5
    assert_boost_equivalent(code, NEAR_SLOT, {"rflags": flags, "rcx": rcx})


def test_rep_movs_runs_all_iterations_in_the_slot():
    regs = {"rsi": DATA, "rdi": DATA + 0x400, "rcx": 300}
    assert_boost_equivalent(ks("rep movsb byte ptr [rdi], byte ptr [rsi]"), NEAR_SLOT, regs)


def test_fault_in_the_slot_maps_back_to_the_probe():
    code = riprel("mov rax, qword ptr {m}", DATA + 0x10000)  # unmapped
    assert_boost_equivalent(code, NEAR_SLOT)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(template=st.sampled_from(BOOSTABLE),
       offset=st.integers(0, DATA_SIZE - 16).map(lambda x: x & ~15),
       slot=st.integers(0x1000, 0x7FFFFFFF).map(lambda a: a & ~(xol.SLOT_SIZE - 1)),
       values=st.lists(st.integers(0, 2**64 - 1), min_size=16, max_size=16),
       flags=st.integers(0, 0xFFF).map(lambda f: (f & 0x8D5) | 0x202))
def test_any_reachable_slot_any_state(template, offset, slot, values, flags):
    """Property: for any slot within reach and any registers, running the boost slot to its
    exit leaves exactly what running the instruction in place leaves."""
    if abs(slot - ORIG) < 0x10000:
        slot += 0x100000
    regs = dict(zip(GPRS, values))
    regs.update(rsp=RSP, rflags=flags)
    assert_boost_equivalent(riprel(template, DATA + offset), slot, regs, pattern(offset & 0xFF))


def test_jump_back_is_rel32_when_it_reaches_else_absolute():
    near = boosted(ks("nop"), NEAR_SLOT)
    insn = next(_cs.disasm(boost.slot_code(near)[1:], NEAR_SLOT + 1, 1))
    assert (insn.mnemonic, int(insn.op_str, 16)) == ("jmp", ORIG + 1)
    far = xol.prepare(decode(ks("nop")), FAR_SLOT)
    code = boost.slot_code(far)
    insn = next(_cs.disasm(code[1:], FAR_SLOT + 1, 1))
    assert insn.mnemonic == "jmp" and insn.op_str == "qword ptr [rip]"
    assert int.from_bytes(code[1 + insn.size:1 + insn.size + 8], "little") == ORIG + 1
    assert far.original_address(FAR_SLOT + 1) == ORIG + 1  # a stop at the jump back
    assert far.original_address(FAR_SLOT) == ORIG          # a stop before the instruction


@pytest.mark.parametrize("text,why", [
    ("syscall", "RCX"),
    ("call rax", "call"),
    ("fld qword ptr [rax]", "x87"),
])
def test_not_boosted_and_why(text, why):
    insn = decode(ks(text))
    assert why in boost.boost_refusal(insn, xol.prepare(insn, NEAR_SLOT))


def test_scratch_register_is_not_boosted():
    insn = decode(riprel("mov eax, dword ptr {m}", DATA))
    assert "scratch" in boost.boost_refusal(insn, xol.prepare(insn, FAR_SLOT))
