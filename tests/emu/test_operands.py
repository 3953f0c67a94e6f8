"""emu.operands: operands of capstone-decoded instructions compiled into getters, setters
and effective addresses, checked against the architecture's rules (32-bit writes zero-extend,
narrow writes merge, 0x67 computes addresses in 32 bits, fs:/gs: add the base, RIP-relative
addresses are fixed) on random register values."""

import capstone
import pytest
from hypothesis import given
from hypothesis import strategies as st

from emu.decode import DEFAULT_KEYS
from emu.errors import Unsupported
from emu.operands import compile_operand, register
from tests.support.flat import CODE, asm

M64 = (1 << 64) - 1
_cs = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
_cs.detail = True
U64 = st.integers(0, M64)


def operands_of(text: str, keys=DEFAULT_KEYS):
    insn = next(_cs.disasm(asm(text), CODE, 1))
    addr32 = capstone.x86_const.X86_PREFIX_ADDRSIZE in insn.prefix
    return [compile_operand(op, CODE + insn.size, keys, addr32) for op in insn.operands]


@given(old=U64, value=st.integers(0, 0xFFFF_FFFF))
def test_register_writes_follow_the_architecture(old, value):
    for text, size, expected in [
        ("mov rax, rbx", 8, value),
        ("mov eax, ebx", 4, value),                                          # zero-extends
        ("mov ax, bx", 2, (old & ~0xFFFF) | (value & 0xFFFF)),               # merges
        ("mov al, bl", 1, (old & ~0xFF) | (value & 0xFF)),
        ("mov ah, bl", 1, (old & ~0xFF00) | ((value & 0xFF) << 8)),
    ]:
        dest = operands_of(text)[0]
        regs = {"rax": old}
        dest.put(regs, None, value & dest.mask)
        assert regs["rax"] == expected & M64, text
        assert dest.size == size and dest.get(regs, None) == value & dest.mask


@given(rbx=U64, rcx=U64, disp=st.integers(-0x8000_0000, 0x7FFF_FFFF))
def test_effective_address_base_index_scale_disp(rbx, rcx, disp):
    sign = "-" if disp < 0 else "+"
    regs = {"rbx": rbx, "rcx": rcx, "fs_base": 0x7F00_0000_1000}
    mem = operands_of(f"mov rax, qword ptr [rbx + rcx*4 {sign} {abs(disp):#x}]")[1]
    assert mem.kind == "mem" and mem.size == 8
    assert mem.address(regs) == (rbx + rcx * 4 + disp) & M64
    fs = operands_of(f"mov rax, qword ptr fs:[rbx + rcx*4 {sign} {abs(disp):#x}]")[1]
    assert fs.address(regs) == (0x7F00_0000_1000 + rbx + rcx * 4 + disp) & M64
    a32 = operands_of(f"mov rax, qword ptr [ebx + ecx*4 {sign} {abs(disp):#x}]")[1]
    assert a32.address(regs) == ((rbx & 0xFFFF_FFFF) + (rcx & 0xFFFF_FFFF) * 4 + disp) & 0xFFFF_FFFF


def test_rip_relative_address_is_the_next_instruction_plus_disp():
    code = asm("mov rax, qword ptr [rip + 0x100]")
    mem = operands_of("mov rax, qword ptr [rip + 0x100]")[1]
    assert mem.address({}) == CODE + len(code) + 0x100


def test_memory_operand_reads_and_writes_little_endian():
    from emu import FlatState
    state = FlatState({"rbx": 0x7000})
    state.map(0x7000, bytes(16))
    mem = operands_of("mov dword ptr [rbx + 4], eax")[0]
    mem.put(state.regs, state, 0x11223344)
    assert state.read(0x7004, 4) == bytes.fromhex("44332211")
    assert mem.get(state.regs, state) == 0x11223344


def test_immediates_are_sign_extended_to_the_operand_size_and_not_writable():
    imm = operands_of("add rax, -2")[1]
    assert imm.kind == "imm" and imm.get({}, None) == M64 - 1
    with pytest.raises(Unsupported):
        imm.put({}, None, 0)


def test_other_register_keys_and_missing_registers():
    keys = {name: i for i, name in enumerate(DEFAULT_KEYS)}
    dest, src = operands_of("mov r9d, r8d", keys)
    regs = [0] * len(keys)
    regs[keys["r8"]] = 0x1_2345_6789
    dest.put(regs, None, src.get(regs, None))
    assert regs[keys["r9"]] == 0x2345_6789
    without_r8 = {k: v for k, v in DEFAULT_KEYS.items() if k != "r8"}
    with pytest.raises(Unsupported, match="r8"):
        operands_of("mov rax, r8", without_r8)
    with pytest.raises(Unsupported, match="general-purpose"):
        register(capstone.x86_const.X86_REG_XMM0, DEFAULT_KEYS)
