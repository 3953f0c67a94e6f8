"""emu.decode beyond the API contract of test_api.py: which instructions touch memory, which
are RIP-relative, the alignment check a program turns on with rflags.AC, and execute's
refusal of what has no plan."""

import pytest

import emu
from emu.decode import touches_memory
from emu.flags import AC
from tests.support.flat import CODE, asm, stack_state


def decoded(text: str) -> emu.Instruction:
    return emu.decode(asm(text), CODE)


@pytest.mark.parametrize("text, touches", [
    ("push rbx", True), ("pop rbx", True), ("ret", True), ("leave", True), ("pushfq", True),
    ("call 0x401100", True), ("mov rax, qword ptr [rbx]", True), ("add dword ptr [rsp], 1", True),
    ("lea rax, [rbx + 8]", False), ("nop dword ptr [rax]", False), ("add rax, rbx", False),
    ("jmp 0x401100", False),
])
def test_touches_memory(text, touches):
    assert touches_memory(decoded(text).capstone) is touches


@pytest.mark.parametrize("text, riprel", [
    ("mov rax, qword ptr [rip + 0x10]", True), ("lea rdi, [rip - 0x20]", True),
    ("mov rax, qword ptr [rbx + 0x10]", False), ("jmp 0x401100", False),
])
def test_rip_relative(text, riprel):
    assert decoded(text).rip_relative is riprel


@pytest.mark.parametrize("text, address, size", [
    ("mov eax, dword ptr [rbx]", 0x7002, 4), ("mov word ptr [rbx], ax", 0x7001, 2),
    ("mov rax, qword ptr [rbx]", 0x7004, 8), ("movups xmm0, xmmword ptr [rbx]", 0x7008, 16),
])
def test_misaligned_access_faults_only_with_ac_set(text, address, size):
    insn = decoded(text)
    plain = stack_state(rbx=address)
    emu.execute(insn, plain)  # AC clear: the CPU does not check
    assert plain.regs["rip"] == insn.next_address
    checked = stack_state(rbx=address, rflags=0x202 | AC)
    before = checked.copy()
    with pytest.raises(emu.MemoryFault) as info:
        emu.execute(insn, checked)
    assert (info.value.address, info.value.size) == (address, size)
    assert checked.regs == before.regs and checked.regions() == before.regions()
    aligned = stack_state(rbx=address & ~(size - 1), rflags=0x202 | AC)
    emu.execute(insn, aligned)
    assert aligned.regs["rip"] == insn.next_address


def test_push_r64_checks_alignment_itself():
    """push r64 makes the AC test inline (its plan is not wrapped): the same fault, nothing
    changed, and an aligned or AC-clear push goes through."""
    insn = decoded("push rbp")
    checked = stack_state(rsp=0x7ffc, rbp=0x1122, rflags=0x202 | AC)
    before = checked.copy()
    with pytest.raises(emu.MemoryFault) as info:
        emu.execute(insn, checked)
    assert (info.value.address, info.value.size, info.value.access) == (0x7ff4, 8, "write")
    assert checked.regs == before.regs and checked.regions() == before.regions()
    for rsp, rflags in ((0x7ffc, 0x202), (0x8000, 0x202 | AC)):
        state = stack_state(rsp=rsp, rbp=0x1122, rflags=rflags)
        emu.execute(insn, state)
        assert state.regs["rsp"] == rsp - 8
        assert state.read(rsp - 8, 8) == (0x1122).to_bytes(8, "little")


def test_byte_accesses_are_never_misaligned():
    state = stack_state(rbx=0x7003, rflags=0x202 | AC)
    emu.execute(decoded("mov byte ptr [rbx], 1"), state)
    assert state.read(0x7003, 1) == b"\x01"


def test_execute_refuses_an_instruction_without_plan():
    insn = decoded("syscall")
    assert insn.plan is None and not insn.emulatable
    state = stack_state()
    with pytest.raises(emu.Unsupported) as info:
        emu.execute(insn, state)
    assert info.value.reason == insn.reason
    assert state.regs["rip"] == CODE


def test_repr_and_next_address():
    insn = decoded("push rbp")
    assert repr(insn) == f"<Instruction {CODE:#x}: push rbp (55)>"
    assert insn.next_address == CODE + 1


@pytest.mark.parametrize("text", ["push rbx", "mov rax, qword ptr [rip + 0x10]",
                                  "lock add dword ptr [rbx], 1", "jmp 0x401100",
                                  "movdqa xmm0, xmmword ptr [rsp]", "ret 8"])
def test_length_is_decodes_length(text):
    code = asm(text) + b"\x90" * 15
    assert emu.length(code) == emu.decode(code, CODE).length


@pytest.mark.parametrize("code", [b"", b"\x0f", b"\x48"])
def test_length_refuses_what_decode_refuses(code):
    with pytest.raises(emu.DecodeError):
        emu.decode(code, CODE)
    with pytest.raises(emu.DecodeError):
        emu.length(code)


@pytest.mark.parametrize("text", ["push rbp", "mov eax, dword ptr [rip + 0x145b06]",
                                  "jmp 0x401100", "call 0x401234", "lock add dword ptr [rax], 1",
                                  "vmovdqu ymm0, ymmword ptr [rsi]", "nop"])
def test_text_is_decodes_text(text):
    code = asm(text) + b"\xcc" * 15
    assert emu.text(code, CODE + 0x40) == emu.decode(code, CODE + 0x40).text


@pytest.mark.parametrize("code", [b"", b"\x0f", b"\x48"])
def test_text_refuses_what_decode_refuses(code):
    with pytest.raises(emu.DecodeError):
        emu.text(code, CODE)
