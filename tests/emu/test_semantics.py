"""Architectural corner cases, each checked against the SDM's text (the differential suite
checks the same families against Unicorn on random states)."""

import pytest

import emu
from emu import flags

from tests.support.flat import CODE, asm, stack_state


def run(text: str, **regs) -> emu.FlatState:
    state = stack_state(**regs)
    emu.execute(emu.decode(asm(text), CODE), state)
    return state


def test_32_bit_results_zero_extend_and_narrow_ones_merge():
    assert run("mov eax, ebx", rax=0xFFFF_FFFF_FFFF_FFFF, rbx=1).regs["rax"] == 1
    assert run("mov ax, bx", rax=0xFFFF_FFFF_FFFF_FFFF, rbx=1).regs["rax"] == 0xFFFF_FFFF_FFFF_0001
    assert run("mov ah, bl", rax=0x1111, rbx=0x22).regs["rax"] == 0x2211


def test_pop_rsp_loads_the_popped_value():
    state = stack_state()
    state.write(0x7FF0, (0x1234).to_bytes(8, "little"))
    state.regs["rsp"] = 0x7FF0
    emu.execute(emu.decode(asm("pop rsp"), CODE), state)
    assert state.regs["rsp"] == 0x1234


def test_pop_to_memory_addresses_with_the_incremented_rsp():
    state = stack_state()
    state.write(0x7FE0, (0xAB).to_bytes(8, "little"))
    state.regs["rsp"] = 0x7FE0
    emu.execute(emu.decode(asm("pop qword ptr [rsp + 8]"), CODE), state)
    assert state.regs["rsp"] == 0x7FE8
    assert state.read(0x7FF0, 8) == (0xAB).to_bytes(8, "little")  # [new rsp + 8]


def test_push_memory_reads_before_rsp_moves_and_call_indirect_reads_before_pushing():
    state = stack_state()
    state.write(0x7FF0, (0x401234).to_bytes(8, "little"))
    state.regs["rsp"] = 0x7FF0
    emu.execute(emu.decode(asm("call qword ptr [rsp]"), CODE), state)
    assert state.regs["rip"] == 0x401234
    assert state.read(0x7FE8, 8) == (CODE + 3).to_bytes(8, "little")


def test_popf_changes_only_what_user_mode_may():
    state = stack_state(rflags=0x202)
    state.write(0x7FF8, (0xFFFF_FFFF).to_bytes(8, "little"))
    state.regs["rsp"] = 0x7FF8
    emu.execute(emu.decode(asm("popfq"), CODE), state)
    assert state.regs["rflags"] == 0x202 | flags.POPF_USER_MASK  # IF kept, IOPL/RF/VM/VIF/VIP not set


def test_pushf_clears_rf_and_vm_in_the_pushed_image():
    state = run("pushfq", rflags=0x10202 | flags.CF)
    assert int.from_bytes(state.read(0x7FF8, 8), "little") == 0x202 | flags.CF


@pytest.mark.parametrize("text, rcx, taken", [
    ("loop 0x401010", 1, False), ("loop 0x401010", 2, True), ("jrcxz 0x401010", 0, True),
    ("jrcxz 0x401010", 1 << 40, False),
])
def test_count_branches(text, rcx, taken):
    code = {"loop 0x401010": b"\xe2\x0e", "jrcxz 0x401010": b"\xe3\x0e"}[text]  # keystone cannot encode these
    state = stack_state(rcx=rcx)
    emu.execute(emu.decode(code, CODE), state)
    assert state.regs["rip"] == (0x401010 if taken else CODE + 2)


@pytest.mark.parametrize("code", [b"\xf0\x01\xd8", b"\xf0\x0f\xba\x20\x01", b"\xf0\x48\x8b\x00"])
def test_lock_prefix_where_the_cpu_raises_ud_is_never_emulated(code):
    """lock add eax, ebx / lock bt [rax], 1 / lock mov rax, [rax]: #UD on the CPU."""
    with pytest.raises(emu.DecodeError):
        emu.decode(code, CODE)


def test_conditions_table_matches_the_sdm_definitions():
    for f in range(0, flags.CONDITION_MASK + 1):
        cf, zf, sf, of, pf = (bool(f & b) for b in (flags.CF, flags.ZF, flags.SF, flags.OF, flags.PF))
        expected = {"a": not cf and not zf, "be": cf or zf, "l": sf != of, "ge": sf == of,
                    "le": zf or sf != of, "g": not zf and sf == of, "p": pf, "o": of}
        for name, value in expected.items():
            assert flags.CONDITION_TABLE[flags.CONDITION_CODES[name]][f] == value


@pytest.mark.parametrize("text, rbx, faults", [
    ("mov eax, dword ptr [rbx]", 0x7001, True), ("mov eax, dword ptr [rbx]", 0x7004, False),
    ("mov al, byte ptr [rbx]", 0x7001, False), ("lea rax, [rbx]", 0x7001, False),
])
def test_alignment_check_flag_makes_misaligned_accesses_fault(text, rbx, faults):
    """With rflags.AC set, Linux delivers SIGBUS for a misaligned access (found by the native
    fuzz oracle): the emulator must decline so the CPU raises it."""
    state = stack_state(rbx=rbx, rflags=0x202 | flags.AC)
    insn = emu.decode(asm(text), CODE)
    if faults:
        with pytest.raises(emu.MemoryFault):
            emu.execute(insn, state)
        assert state.regs["rip"] == CODE
    else:
        emu.execute(insn, state)


def test_alignment_check_covers_the_stack():
    state = stack_state(rflags=0x202 | flags.AC, rbp=1)
    state.regs["rsp"] = 0x7FF4
    with pytest.raises(emu.MemoryFault):
        emu.execute(emu.decode(asm("push rbp"), CODE), state)
    state.regs["rsp"] = 0x7FF8
    emu.execute(emu.decode(asm("push rbp"), CODE), state)
    assert state.regs["rsp"] == 0x7FF0


@pytest.mark.parametrize("text, regs", [
    ("push bx", {"rbx": 0x1122334455667788}), ("push sp", {}), ("push 0x1234", {}),
    ("push word ptr [rax]", {"rax": 0x403010}), ("pop bx", {"rbx": 0xFFFF_FFFF_FFFF_FFFF}),
    ("pop sp", {}), ("pop word ptr [rax]", {"rax": 0x403010}),
    ("pop word ptr [rsp + 6]", {}), ("push bx", {"rsp": 0x407001}),  # the stack's edge: faults
])
def test_16_bit_push_and_pop_agree_with_unicorn(text, regs):
    """0x66 push/pop move 2 bytes and rsp by 2 (SDM PUSH/POP, operand size 16)."""
    from emu.testing import compare
    from emu.testing.generate import example_case

    memory = {0x407FFE: b"\xcd\xab", 0x403010: b"\x34\x12"}
    compare.check(example_case(text, 0x401000, memory=memory, **regs))
