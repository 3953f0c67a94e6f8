"""The emu API contract: decode, the FlatState, execute's all-or-nothing rule."""

import pytest

import emu
from tests.support.flat import CODE, asm, stack_state


def test_readme_example_push_rbp():
    insn = emu.decode(b"\x55", 0x401000)
    assert (insn.address, insn.length, insn.mnemonic, insn.text) == (0x401000, 1, "push", "push rbp")
    assert insn.emulatable and insn.reason is None and not insn.atomic
    state = stack_state(rbp=0x1234)
    emu.execute(insn, state)
    assert state.regs["rsp"] == 0x7FF8
    assert state.read(0x7FF8, 8) == (0x1234).to_bytes(8, "little")
    assert state.regs["rip"] == 0x401001


@pytest.mark.parametrize("code", [b"", b"\x48", b"\x06", b"\xf0\x89\x18", b"\x48\x8b"])
def test_invalid_or_truncated_bytes_raise_decode_error(code):
    with pytest.raises(emu.DecodeError):
        emu.decode(code, CODE)


def test_trailing_bytes_are_ignored():
    insn = emu.decode(asm("push rbp") + b"\xcc" * 20, CODE)
    assert insn.length == 1 and insn.next_address == CODE + 1


@pytest.mark.parametrize("text, reason_part", [
    ("syscall", "system call"), ("int 0x80", "interrupt"), ("hlt", "privileged"),
    ("fld dword ptr [rax]", "x87"), ("addps xmm0, xmm1", "SSE"), ("rep movsb", "string"),
    ("cpuid", "cpuid"), ("vaddps ymm0, ymm1, ymm2", "AVX"),
])
def test_unsupported_instructions_say_why(text, reason_part):
    insn = emu.decode(asm(text), CODE)
    assert not insn.emulatable
    assert reason_part in insn.reason
    with pytest.raises(emu.Unsupported) as info:
        emu.execute(insn, stack_state())
    assert reason_part in info.value.reason


@pytest.mark.parametrize("text, atomic", [
    ("lock add dword ptr [rax], ebx", True), ("xchg qword ptr [rax], rbx", True),
    ("lock xadd dword ptr [rax], ebx", True), ("xchg rax, rbx", False),
    ("add dword ptr [rax], ebx", False),
])
def test_atomic_marks_locked_read_modify_writes(text, atomic):
    assert emu.decode(asm(text), CODE).atomic is atomic


def test_flat_state_faults_outside_regions_and_on_read_only_writes():
    state = emu.FlatState()
    state.map(0x1000, b"\x01" * 16, writable=False)
    state.map(0x2000, bytes(16))
    assert state.read(0x1000, 16) == b"\x01" * 16
    with pytest.raises(emu.MemoryFault) as info:
        state.write(0x1000, b"\x00")
    assert (info.value.address, info.value.size, info.value.access) == (0x1000, 1, "write")
    with pytest.raises(emu.MemoryFault):
        state.read(0x100F, 2)  # straddles the end of the region
    with pytest.raises(emu.MemoryFault):
        state.read(0x3000, 1)
    with pytest.raises(ValueError):
        state.map(0x2008, bytes(16))  # overlaps
    with pytest.raises(KeyError):
        emu.FlatState({"eax": 1})


@pytest.mark.parametrize("text, regs", [
    ("push rbp", {"rsp": 0x10}),                         # store faults
    ("call 0x401100", {"rsp": 0x10}),                    # return address store faults
    ("add qword ptr [rbx], rax", {"rbx": 0x7000}),       # read-only destination
    ("pop qword ptr [rbx]", {"rbx": 0x7000, "rsp": 0x8ff8}),
    ("ret", {"rsp": 0x20}),                              # load faults
    ("xchg qword ptr [rbx], rax", {"rbx": 0x7000}),
])
def test_a_faulting_instruction_leaves_the_state_untouched(text, regs):
    state = emu.FlatState({"rip": CODE, "rax": 1, **regs})
    state.map(0x7000, bytes(0x1000), writable=False)
    state.map(0x8000, bytes(0x1000))
    before_regs, before_mem = dict(state.regs), state.regions()
    with pytest.raises(emu.MemoryFault):
        emu.execute(emu.decode(asm(text), CODE), state)
    assert state.regs == before_regs
    assert state.regions() == before_mem


def test_compile_accepts_other_register_keys():
    """A live thread keeps registers in a ptrace buffer: a plan can index it directly."""
    names = emu.REGISTER_NAMES
    keys = {name: i for i, name in enumerate(names)}
    plan = emu.compile(emu.decode(asm("lea rax, [rbx + rcx*4 + 8]"), CODE), keys)

    class ListState:
        regs = [0] * len(names)

    state = ListState()
    state.regs[keys["rbx"]], state.regs[keys["rcx"]], state.regs[keys["rip"]] = 0x100, 2, CODE
    plan(state)
    assert state.regs[keys["rax"]] == 0x110
    assert state.regs[keys["rip"]] == CODE + 5


def test_straddling_finds_the_instruction_covering_an_address():
    code = bytes.fromhex("55" "4889e5" "b801000000" "c3")  # push rbp; mov rbp, rsp; mov eax, 1; ret
    start = 0x401000
    assert emu.straddling(code, start, start + 4) is None          # mov eax, 1 starts there
    assert emu.straddling(code, start, start) is None
    inside = emu.straddling(code, start, start + 2)
    assert (inside.address, inside.mnemonic) == (start + 1, "mov")
    assert emu.straddling(code, start, start + 6).text == "mov eax, 1"
    with pytest.raises(emu.DecodeError):
        emu.straddling(bytes.fromhex("0f0b") + b"\x0f", start, start + 3)
