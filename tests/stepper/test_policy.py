"""stepper.policy: which strategy steps a site under each mode, and the verdict the coverage
report shows, on instructions assembled with keystone (no process: choosing happens at
insertion, from the decoded instruction alone)."""

from __future__ import annotations

import pytest

import emu
from stepper import policy
from stepper.strategies.boost import BoostOps
from stepper.errors import StepperError
from stepper.strategies.emulate import EmulateOps
from stepper.strategies.reinsert import ReinsertOps
from stepper.strategies.xol import XolOps
from tests.support.flat import CODE, asm


def decoded(text: str) -> emu.Instruction:
    return emu.decode(asm(text), CODE)


#: text -> (verdict, the ops class per mode, or the start of the refusal message)
CASES = {
    "add rax, rbx": ("emulate", {"auto": EmulateOps, "emulate": EmulateOps, "xol": XolOps,
                                 "boost": BoostOps}),
    "movq xmm0, rax": ("emulate", {"auto": EmulateOps, "emulate": EmulateOps, "xol": XolOps,
                                   "boost": BoostOps}),
    "syscall": ("xol", {"auto": BoostOps, "emulate": "is not emulated", "xol": XolOps,
                        "boost": BoostOps}),
    "cpuid": ("xol", {"auto": BoostOps, "emulate": "is not emulated", "xol": XolOps,
                      "boost": BoostOps}),
    "int3": ("refused", {"auto": "can be neither emulated", "emulate": "is not emulated",
                         "xol": "cannot be stepped out of line",
                         "boost": "cannot be stepped out of line"}),
    "hlt": ("refused", {"auto": "can be neither emulated", "emulate": "is not emulated",
                        "xol": "cannot be stepped out of line",
                        "boost": "cannot be stepped out of line"}),
}


@pytest.mark.parametrize("text", CASES)
def test_verdict_and_choice_per_mode(text):
    insn = decoded(text)
    want_verdict, per_mode = CASES[text]
    assert policy.verdict(insn) == want_verdict
    assert isinstance(policy.choose("reinsert", insn), ReinsertOps)
    for mode, want in per_mode.items():
        if isinstance(want, str):
            with pytest.raises(StepperError, match=f"^{insn.text} at {CODE:#x} {want}"):
                policy.choose(mode, insn)
        else:
            assert type(policy.choose(mode, insn)) is want, mode


def test_auto_falls_back_to_boost_and_emulate_to_plain_xol():
    """What an emulated hit hands to the CPU (a fault, an atomic op while threads run)."""
    insn = decoded("lock add qword ptr [rax], 1")
    assert isinstance(policy.choose("auto", insn).fallback, BoostOps)
    assert isinstance(policy.choose("emulate", insn).fallback, XolOps)


def test_live_plan_reason_says_why():
    assert policy.live_plan_reason(decoded("add rax, rbx")) is None
    assert "system call" in policy.live_plan_reason(decoded("syscall"))


def test_unknown_mode_names_the_choices():
    with pytest.raises(StepperError, match="unknown strategy 'fast': choose one of auto, emulate"):
        policy.choose("fast", decoded("nop"))


def test_verdict_agrees_with_auto():
    """The report's verdict is how `auto` steps: emulate <=> EmulateOps, refused <=> error."""
    for text in ["add rax, rbx", "push rbp", "rdtsc", "int3", "ret", "pushfq", "ud2"]:
        insn = decoded(text)
        try:
            ops = policy.choose("auto", insn)
        except StepperError:
            assert policy.verdict(insn) == "refused", text
            continue
        assert (policy.verdict(insn) == "emulate") == isinstance(ops, EmulateOps), text


@pytest.mark.parametrize("text", ["add rax, rbx", "syscall", "jmp 0x401100",
                                  "mov rax, qword ptr [rip + 0x10]"])
def test_decide_remembers_the_answer_by_bytes_whatever_the_address(text):
    code = asm(text) + b"\x90" * 8
    insn, ops = policy.decide("auto", code, CODE)
    known = policy.known("auto", code)
    assert known[:3] == (type(ops), ops.name, policy._why(ops, "auto"))
    # the text is kept only where it names no address (relative branches, rip-relative)
    elsewhere = policy.decide("auto", code, CODE + 0x10000)[0]
    assert (known[3] is None) == (elsewhere.text != insn.text or insn.rip_relative)
    assert policy.known("emulate", code + b"\x90") is None


@pytest.mark.parametrize("text", ["add rax, rbx", "int3", "hlt", "syscall"])
@pytest.mark.parametrize("mode", ["auto", "emulate", "xol"])
def test_check_answers_as_decide(text, mode):
    """The preflight's `check` accepts or refuses as `decide` does, with the same message,
    also when the instruction was accepted before at another address."""
    code = asm(text) + b"\xcc" * 8
    def outcome(call, address):
        try:
            call(mode, code, address)
        except StepperError as e:
            return str(e)
        return None
    first = outcome(policy.decide, CODE)
    assert outcome(policy.check, CODE + 0x20) == outcome(policy.decide, CODE + 0x20)
    assert (outcome(policy.check, CODE) is None) == (first is None)
    assert outcome(policy.check, CODE + 0x40) == outcome(policy.decide, CODE + 0x40)
