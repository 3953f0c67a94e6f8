"""The emulator against Unicorn, instruction family by instruction family.

Each family draws assembled instructions with random operands and random register/memory
states (emu/testing/generate/), runs them through `emu.execute` on a FlatState and through
Unicorn from the same state, and requires the same registers, the same defined flags and the
same bytes, or the same kind of fault with the emulator's state untouched.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import emu
from emu.testing import compare, generate, unicorn_oracle
from emu.testing.generate import FAMILIES, cases, example_case

M128 = (1 << 128) - 1


STRATEGIES = {family: cases(family) for family in FAMILIES}


@pytest.mark.parametrize("family", sorted(FAMILIES))
@given(data=st.data())
def test_family_agrees_with_unicorn(family, data):
    compare.check(data.draw(STRATEGIES[family], label="case"))


# ------------------------------------------------ what the emulator must refuse

UNSUPPORTED = (
    "syscall", "int 0x80", "hlt", "cpuid", "fld st(1)", "fadd st(0), st(1)", "fstp qword ptr [rax]",
    "addps xmm0, xmm1", "sqrtsd xmm0, qword ptr [rax]", "movsb byte ptr [rdi], byte ptr [rsi]",
    "rep stosb byte ptr [rdi], al", "rep movsq qword ptr [rdi], qword ptr [rsi]",
    # the string movsd shares capstone's id with the SSE scalar movsd, which is emulated
    "movsd dword ptr [rdi], dword ptr [rsi]", "rep movsd dword ptr [rdi], dword ptr [rsi]",
    # VEX moves also zero the upper YMM bits, which are not modelled (emu/semantics/vector.py)
    "vmovdqu xmm0, [rax]", "vmovdqa ymm1, ymm2", "vpxor xmm0, xmm0, xmm0",
)


@pytest.mark.parametrize("text", UNSUPPORTED)
def test_clearly_unsupported_instructions_are_refused(text):
    code = generate.encode(text, 0x401000)
    assert code, f"keystone cannot encode {text!r}"
    insn = emu.decode(code, 0x401000)
    assert not insn.emulatable
    assert insn.reason
    state = example_case("nop").state()
    before = (dict(state.regs), state.regions())
    with pytest.raises(emu.Unsupported):
        emu.execute(insn, state)
    assert (dict(state.regs), state.regions()) == before


# ------------------------------------------------ the harness itself


def test_oracle_runs_a_push_like_the_cpu():
    """The oracle alone, on a hand-made state: push rbp stores rbp below rsp."""
    case = example_case("push rbp", rbp=0x1122334455667788)
    rsp = dict(case.regs)["rsp"]
    out = unicorn_oracle.run(case.state())
    assert out.fault is None and out.regs["rsp"] == rsp - 8 and out.regs["rip"] == case.address + 1
    stack = generate.REGION["stack"][0] + (case.address & ~0xFFF)
    assert out.memory[stack][rsp - 8 - stack:rsp - stack] == (0x1122334455667788).to_bytes(8, "little")


@pytest.mark.parametrize("text, regs, kind", [
    ("mov rax, qword ptr [rbx]", {"rbx": 0x10}, "read"),
    ("mov qword ptr [rbx], rax", {"rbx": 0x401000}, "write"),  # the read-only code page
    ("mov qword ptr [rbx], rax", {"rbx": 0x402FFC}, "write"),  # straddles into the gap
])
def test_oracle_faults_where_flatstate_does(text, regs, kind):
    case = example_case(text, **regs)
    assert unicorn_oracle.run(case.state()).fault == kind
    assert compare.run_emu(case).fault == kind


def test_a_branch_to_unmapped_memory_completes():
    """Unicorn reports the next fetch as a fault; the oracle counts the jump as done."""
    out = unicorn_oracle.run(example_case("jmp rax", rax=0xDEAD0000).state())
    assert out.fault is None and out.regs["rip"] == 0xDEAD0000


def test_oracle_sets_and_reads_the_xmm_registers():
    """A full 128-bit value goes into Unicorn's xmm2 and comes back out of xmm1."""
    value = 0xFEDCBA98765432100123456789ABCDEF
    out = unicorn_oracle.run(example_case("movdqa xmm1, xmm2", xmm2=value).state())
    assert out.fault is None and out.regs["xmm1"] == out.regs["xmm2"] == value
    assert all(out.regs[f"xmm{n}"] == 0 for n in range(16) if n not in (1, 2))


def test_comparison_reports_a_planted_xmm_difference():
    """xmm registers are compared for every case, including non-SSE instructions."""
    for text in ("movups xmm3, xmmword ptr [rsp]", "add rax, rbx"):
        case = example_case(text, xmm3=1 << 100, xmm15=M128)
        emu_out = compare.run_emu(case)
        uc_out = unicorn_oracle.run(case.state())
        assert compare._compare(case, emu_out, uc_out) == []
        emu_out.regs["xmm15"] ^= 1 << 127
        problems = compare._compare(case, emu_out, uc_out)
        assert [p.split(":")[0] for p in problems] == ["xmm15"]


def test_oracle_refuses_partial_pages():
    state = example_case("nop").state()
    state.map(0x10000000, bytes(100))
    with pytest.raises(ValueError, match="whole pages"):
        unicorn_oracle.run(state)


def test_comparison_reports_a_planted_difference():
    """compare must see a wrong register, a wrong byte and a defined flag, with a reproducer."""
    case = example_case("add qword ptr [rsp], rax", rax=1)
    emu_out = compare.run_emu(case)
    uc_out = unicorn_oracle.run(case.state())
    assert compare._compare(case, emu_out, uc_out) == []
    emu_out.regs["rax"] ^= 1
    emu_out.regs["rflags"] ^= 0x1  # CF is defined for add
    start = next(iter(emu_out.memory))
    emu_out.memory[start] = bytes([emu_out.memory[start][0] ^ 1]) + emu_out.memory[start][1:]
    problems = compare._compare(case, emu_out, uc_out)
    assert [p.split(":")[0] for p in problems] == ["rax", "rflags", f"memory {start:#x}..{start + 1:#x}"]
    report = str(compare.Divergence(case, problems, emu_out, uc_out))
    assert "reproducer: Case(" in report and case.code.hex() in report


def test_generator_reaches_rip_relative_fs_gs_and_faulting_operands():
    """The aimed memory operands must actually produce each kind the generator is meant to draw."""
    from hypothesis import settings
    seen = set()

    @settings(max_examples=200, database=None)
    @given(cases("mov") | cases("push") | cases("call") | cases("add"))
    def sample(case):
        seen.add("rip" if "[rip" in case.text else "other")
        seen.update(seg for seg in ("fs", "gs") if f"{seg}:" in case.text)
        seen.add("fault" if compare.run_emu(case).fault else "completes")
    sample()
    assert seen >= {"rip", "fs", "gs", "fault", "completes"}


def test_sse_generator_reaches_every_kind_of_operand():
    """Each SSE family reaches xmm<-xmm (or gpr), a load, a store, a fault and full 128-bit
    register values; the unaligned-access families reach misaligned operands, the aligned ones
    never (Unicorn would not raise the #GP: see emu/testing/generate/cases.py). Every individual form is run
    against Unicorn by test_every_sse_form_agrees_with_unicorn."""
    import capstone
    from hypothesis import seed, settings
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    seen = set()

    # A fixed seed rather than the ci profile's derandomize: deterministic either way, and
    # hypothesis keeps an instruction while it varies the state, so a family sees only a
    # dozen instruction forms in 100 examples; this seed is known to reach every kind.
    @seed(20261123)
    @settings(max_examples=80, database=None, derandomize=False)
    @given(st.data())
    def sample(data):
        case = data.draw(cases(family))
        insn = next(md.disasm(case.code, case.address))
        ops = insn.operands
        kind = ("load" if ops[1].type == capstone.x86.X86_OP_MEM else
                "store" if ops[0].type == capstone.x86.X86_OP_MEM else "register")
        regs = dict(case.regs)
        out = compare.run_emu(case)
        seen.add((family, "fault" if out.fault else kind))
        if any(regs[f"xmm{n}"] >> 64 for n in range(16)):
            seen.add((family, "high xmm bits"))
        for op in ops:
            if op.type == capstone.x86.X86_OP_MEM and generate._effective_address(op.mem, insn, regs) % 16:
                assert family not in generate.ALIGNED_FAMILIES, case.describe()
                seen.add((family, "misaligned"))

    families = sorted(f for f in FAMILIES if f.startswith("sse"))
    for family in families:
        sample()
    wanted = {(f, k) for f in families for k in ("register", "load", "fault", "high xmm bits")}
    wanted |= {(f, "store") for f in families if f != "sse_xor"}
    wanted |= {(f, "misaligned") for f in families if f not in generate.ALIGNED_FAMILIES}
    missing = wanted - seen
    assert not missing, sorted(missing)


SSE_FORMS = (
    "movd xmm3, eax", "movd r9d, xmm12", "movd xmm0, dword ptr [rbx]", "movd dword ptr [rbx], xmm15",
    "movq xmm3, rax", "movq r9, xmm12", "movq xmm0, qword ptr [rbx]", "movq qword ptr [rbx], xmm15",
    "movq xmm5, xmm6", "movss xmm1, xmm2", "movss xmm1, dword ptr [rbx]", "movss dword ptr [rbx], xmm9",
    "movsd xmm1, xmm2", "movsd xmm1, qword ptr [rbx]", "movsd qword ptr [rbx], xmm9",
    *(f"{m} {ops}" for m in ("movdqa", "movaps", "movapd", "movdqu", "movups", "movupd")
      for ops in ("xmm4, xmm11", "xmm4, xmmword ptr [rbx]", "xmmword ptr [rbx], xmm11")),
    *(f"{m} {ops}" for m in ("pxor", "xorps", "xorpd")
      for ops in ("xmm4, xmm11", "xmm7, xmm7", "xmm4, xmmword ptr [rbx]")),
)
_ALIGNED = ("movdqa", "movaps", "movapd", "pxor", "xorps", "xorpd")


@pytest.mark.parametrize("text", SSE_FORMS)
def test_every_sse_form_agrees_with_unicorn(text):
    """Every SSE form, with full 128-bit values in all sixteen registers and memory, at an
    aligned address and (for the forms that allow it) a misaligned one."""
    import random
    rnd = random.Random(text)
    data = 0x403000  # the writable data page of example_case's layout at 0x401000
    offsets = (0x10,) if text.split()[0] in _ALIGNED else (0x10, 0x7, 0xFF9)
    for offset in offsets:
        xmm = {f"xmm{n}": rnd.getrandbits(128) for n in range(16)}
        case = example_case(text, memory={data: rnd.randbytes(0x1000)}, rbx=data + offset,
                            rax=rnd.getrandbits(64), r9=rnd.getrandbits(64), **xmm)
        compare.check(case)
        out, before = compare.run_emu(case), case.state()
        changed = {n for n, v in out.regs.items() if v != before.regs[n]} - {"rip"}
        assert changed or out.memory != {s: d for s, d, _ in before.regions()}  # it did something
