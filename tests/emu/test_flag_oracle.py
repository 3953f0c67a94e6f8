"""emu.flag_oracle: every instruction whose flags the SDM leaves partly undefined asks the
flags oracle when one is given (so a live thread never sees emu's own model of them)."""

from __future__ import annotations

import capstone
import pytest

import emu
from emu.flag_oracle import OPERATIONS
from emu.semantics import TABLE
from emu.testing.generate import encode

#: capstone's SAL is the undocumented /6 alias of SHL (D3 /6), which assemblers never emit
#: (they encode `sal` as SHL's /4): its bytes are written out.
_RAW = {"sal": bytes.fromhex("d3f0")}  # sal eax, cl
_TEMPLATES = ("{m} eax, ecx", "{m} ecx", "{m} eax, 3", "{m} eax, ecx, 3", "{m} rax, rcx")


class _Refusing:
    """An oracle that knows nothing: every instruction that asks it becomes Unsupported."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int]] = []

    def operation(self, name: str, bits: int):
        self.asked.append((name, bits))
        raise emu.Unsupported("no oracle")


class _Recording:
    """An oracle whose flags are a recognisable constant, recording what it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int, int, int]] = []

    def operation(self, name: str, bits: int):
        assert name in OPERATIONS and bits in OPERATIONS[name][0]

        def flags(a: int, b: int, rflags: int) -> int:
            self.calls.append((name, bits, a, b, rflags))
            return (rflags & ~0x8D5) | 0x8D5
        return flags


def _ids_with_undefined_flags() -> list[int]:
    return sorted(i for i, spec in TABLE.items() if spec.undefined)


@pytest.mark.parametrize("insn_id", _ids_with_undefined_flags())
def test_every_instruction_with_undefined_flags_asks_the_oracle(insn_id):
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    mnemonic = md.insn_name(insn_id)
    for code in (_RAW.get(mnemonic), *(encode(t.format(m=mnemonic), 0x1000) for t in _TEMPLATES)):
        if code and emu.decode(code, 0x1000).capstone.id == insn_id:
            break
    else:
        pytest.fail(f"no template assembles {mnemonic}")
    insn = emu.decode(code, 0x1000)
    assert insn.emulatable
    oracle = _Refusing()
    with pytest.raises(emu.Unsupported):
        emu.compile(insn, None, oracle)
    assert oracle.asked


def test_the_oracle_gets_the_operands_and_its_flags_are_kept():
    insn = emu.decode(encode("imul eax, dword ptr [rbx], 7", 0x1000), 0x1000)
    oracle = _Recording()
    plan = emu.compile(insn, None, oracle)
    state = emu.FlatState({"rip": 0x1000, "rbx": 0x3000, "rax": 0xFFFFFFFF00000000,
                           "rflags": 0x202})
    state.map(0x3000, (0x80000001).to_bytes(4, "little") + bytes(0xFFC))
    plan(state)
    assert oracle.calls == [("imul2", 32, 0x80000001, 7, 0x202)]
    assert state.regs["rflags"] == 0x202 | 0x8D5
    assert state.regs["rax"] == (0x80000001 * 7) & 0xFFFFFFFF  # the result is still emu's


def test_without_an_oracle_the_model_is_emus_own():
    insn = emu.decode(encode("shl eax, 1", 0x1000), 0x1000)
    state = emu.FlatState({"rip": 0x1000, "rax": 0x40000000, "rflags": 0x202 | 0x10})
    emu.execute(insn, state)
    assert state.regs["rax"] == 0x80000000 and state.regs["rflags"] & 0x10 == 0
