"""The flags the SDM leaves undefined are the host CPU's on live threads (stepper.host_flags).

The main test builds, with gcc, a program of a few hundred random flag-setting instructions
(mul, imul, shifts, rotates, rcl/rcr, shld/shrd, logic, bt*, bsf/bsr...) on random operands
and random incoming flags, each followed by `pushf`, the flags and the registers stored and
printed; every instruction of it is probed (every one the mode can step) and the output must
be byte-identical to the unprobed run's.
"""

from __future__ import annotations

import random
import shutil
import subprocess

import pytest

import emu
from tests.support.elf import instructions
from tests.support.runs import run_cli, run_plain
from stepper.errors import StepperError

SEED = 20261203
OPS = 250
SCRATCH_BYTES = 256
STATUS = 0x8D5

_REGS = {  # name -> operand syntax per width
    "a": {8: "%al", 16: "%ax", 32: "%eax", 64: "%rax"},
    "b": {8: "%bl", 16: "%bx", 32: "%ebx", 64: "%rbx"},
    "r8": {8: "%r8b", 16: "%r8w", 32: "%r8d", 64: "%r8"},
    "r9": {8: "%r9b", 16: "%r9w", 32: "%r9d", 64: "%r9"},
}
_SUFFIX = {8: "b", 16: "w", 32: "l", 64: "q"}
_STORED = ("%rax", "%rbx", "%rcx", "%rdx", "%r8", "%r9")


def _value(rng: random.Random) -> int:
    """Operands that reach the interesting flags: zero, one, signs, small and full values."""
    return rng.choice([0, 1, 2, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFFFFFF, 0x80000000,
                       1 << 63, (1 << 64) - 1, rng.getrandbits(8), rng.getrandbits(16),
                       rng.getrandbits(64), rng.getrandbits(64)])


def _operation(rng: random.Random) -> str:
    """One random flag-setting instruction (AT&T syntax); operands: a b r8 r9, cl, (%rsi)."""
    family = rng.choice(["mul", "imul1", "imul2", "imul3", "shift", "shift", "shift", "rotc",
                         "shd", "logic", "bt", "bsf"])
    bits = rng.choice([16, 32, 64] if family in ("imul2", "imul3", "shd", "bt", "bsf")
                      else [8, 16, 32, 64])
    s = _SUFFIX[bits]
    reg = lambda: _REGS[rng.choice(["a", "b", "r8", "r9"])][bits]  # noqa: E731
    dst = reg() if rng.random() < 0.75 else "(%rsi)"
    src = _REGS[rng.choice(["b", "r8", "r9"])][bits] if rng.random() < 0.8 else "(%rsi)"
    count = rng.choice([f"${rng.randrange(64)}", "%cl", "$1", "1"])
    if family == "mul":
        return f"{rng.choice(['mul', 'imul'])}{s} {src}"
    if family in ("imul1", "imul2"):
        return f"imul{s} {src}, {reg()}" if family == "imul2" else f"imul{s} {src}"
    if family == "imul3":
        imm = rng.choice([rng.randrange(-128, 128), rng.randrange(-2**15, 2**15)])
        return f"imul{s} ${imm}, {src}, {reg()}"
    if family in ("shift", "rotc"):
        name = rng.choice(["shl", "sal", "shr", "sar", "rol", "ror"] if family == "shift"
                          else ["rcl", "rcr"])
        return f"{name}{s} {dst}" if count == "1" else f"{name}{s} {count}, {dst}"
    if family == "shd":
        shift_count = count if count not in ("1", "$1") else "$1"
        return f"{rng.choice(['shld', 'shrd'])}{s} {shift_count}, {reg()}, {dst}"
    if family == "logic":
        name = rng.choice(["and", "or", "xor", "test"])
        operand = rng.choice([src, f"${rng.randrange(-128, 128)}", reg()])
        if operand == "(%rsi)" and dst == "(%rsi)":
            operand = reg()
        return f"{name}{s} {operand}, {dst}"
    if family == "bt":
        name = rng.choice(["bt", "bts", "btr", "btc"])
        if rng.random() < 0.5:
            return f"{name}{s} ${rng.randrange(256)}, {dst}"
        return f"{name}{s} {_REGS[rng.choice(['b', 'r8', 'r9'])][bits]}, {reg()}"
    return f"{rng.choice(['bsf', 'bsr'])}{s} {src}, {reg()}"


def generate(seed: int = SEED, count: int = OPS) -> tuple[str, list[str]]:
    """(assembly of `op_0`..`op_{count-1}` and their table `op_table`, the instructions under
    test). Each op is its own small function `op_N(out, scratch)`: operands and incoming
    flags set, the instruction, `pushf`, the flags and registers stored at out[N * 8...]."""
    rng = random.Random(seed)
    lines = [".text"]
    ops = []
    for n in range(count):
        op = _operation(rng)
        ops.append(op)
        lines += [f".globl op_{n}", f".type op_{n}, @function", f"op_{n}:", "push %rbx"]
        for r in ("%rax", "%rbx", "%r8", "%r9", "%rdx"):
            lines.append(f"movabs ${_value(rng)}, {r}")
        lines.append(f"movabs ${_value(rng)}, %r10")
        lines.append("mov %r10, (%rsi)")
        lines.append(f"mov ${rng.randrange(80)}, %ecx")
        lines.append(f"push ${0x202 | (rng.getrandbits(12) & STATUS)}")
        lines.append("popfq")
        lines.append(op)
        lines.append("pushfq")
        lines.append("pop %r10")
        base = 8 * _WORDS * n
        lines.append(f"mov %r10, {base}(%rdi)")
        for k, r in enumerate(_STORED, 1):
            lines.append(f"mov {r}, {base + 8 * k}(%rdi)")
        lines.append("mov (%rsi), %r10")
        lines.append(f"mov %r10, {base + 8 * (len(_STORED) + 1)}(%rdi)")
        lines += ["pop %rbx", "ret", f".size op_{n}, .-op_{n}"]
    lines += [".section .data.rel.ro", ".globl op_table", ".balign 8", "op_table:"]
    lines += [f".quad op_{n}" for n in range(count)]
    lines += [".section .note.GNU-stack, \"\", @progbits", ""]
    return "\n".join(lines), ops


_WORDS = len(_STORED) + 2
_MAIN = f"""
#include <stdio.h>
#include <stdint.h>
extern void (*const op_table[])(uint64_t *, uint64_t *);
static uint64_t out[{OPS} * {_WORDS}];
static uint64_t scratch[{SCRATCH_BYTES} / 8];
int main(void) {{
    for (int i = 0; i < {OPS}; i++) {{
        op_table[i](out, scratch);
        printf("%4d flags %04lx", i, (unsigned long)out[i * {_WORDS}]);
        for (int j = 1; j < {_WORDS}; j++)
            printf(" %016lx", (unsigned long)out[i * {_WORDS} + j]);
        printf("\\n");
    }}
    return 0;
}}
"""


def _sites(exe: str) -> list:
    """Every instruction of every op function."""
    return [i for n in range(OPS) for i in instructions(exe, f"op_{n}")]


@pytest.fixture(scope="module")
def flags_program(tmp_path_factory):
    """The generated program, built with gcc: (executable, the instructions under test)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the generated program")
    out = tmp_path_factory.mktemp("flags")
    asm, ops = generate()
    (out / "ops.S").write_text(asm)
    (out / "main.c").write_text(_MAIN)
    exe = out / "flags"
    subprocess.run(["gcc", "-O1", "-o", str(exe), str(out / "main.c"), str(out / "ops.S")],
                   check=True)
    return str(exe), ops


def test_the_generated_program_exercises_undefined_flags(flags_program):
    """The program holds the families the test claims, most of its instructions under test
    are emulated and have undefined flags, and its output varies."""
    exe, ops = flags_program
    names = {op.split()[0][:-1] for op in ops}  # AT&T: the size suffix dropped
    assert {"mul", "imul", "shl", "sar", "rol", "rcl", "shld", "and", "bt", "bsf"} <= names
    every = _sites(exe)
    tested = [i for i in every if emu.undefined_flags(i, {"rcx": 2}) and i.emulatable]
    assert len(tested) > OPS // 3
    plain = run_plain([exe])
    assert plain.returncode == 0 and plain.stdout.count(b"\n") == OPS
    assert len({line.split()[2] for line in plain.stdout.decode().splitlines()}) > 16


def _under_test(every: list) -> list:
    """The instruction under test of each op: the one right after each `popfq`."""
    return [every[n + 1] for n, i in enumerate(every) if i.mnemonic == "popfq"]


@pytest.mark.parametrize("mode", ["auto", "emulate"])
def test_every_site_probed_prints_the_same_flags(flags_program, tmp_path, mode):
    """Every instruction of the generated program probed: output byte-identical to unprobed.
    In `emulate` mode every instruction the emulator runs is probed; the rest (rcl, shld,
    bsf...) cannot be probed in that mode and are checked in `auto`."""
    exe, _ = flags_program
    every = _sites(exe)
    sites = every
    if mode == "emulate":
        sites = [i for i in every if i.emulatable]
        emulated = [i for i in _under_test(every) if i.emulatable]
        assert {i.mnemonic for i in emulated} >= {"mul", "imul", "shl", "sar", "rol", "and", "bt"}
    plain = run_plain([exe])
    probed = run_cli([exe], [i.address for i in sites], mode, tmp_path, timeout=600)
    assert probed.stderr == b""
    assert probed.returncode == plain.returncode == 0
    assert probed.stdout == plain.stdout
    report = probed.report
    assert len(report["probes"]) == len(sites) and all(p["hits"] == 1 for p in report["probes"])
    if mode == "emulate":
        assert report["steps"]["emulate"] == sum(p["hits"] for p in report["probes"])


def test_host_flags_agree_with_emu_on_every_defined_flag():
    """The CPU's answers, through the stubs, on the flags the SDM defines, are emu's: the
    stubs load the operands and the incoming flags where the instruction reads them."""
    import keystone

    from stepper import host_flags

    oracle = host_flags.get()
    assert oracle.error is None
    ks = keystone.Ks(keystone.KS_ARCH_X86, keystone.KS_MODE_64)
    rng = random.Random(7)
    for text in ("mul ecx", "imul rcx", "imul eax, ecx, 0x1234", "imul ax, cx", "shl al, cl",
                 "shr eax, 1", "sar rax, 5", "rol eax, cl", "ror ax, 1", "bts rax, rcx",
                 "btc eax, 37", "and eax, ecx", "test al, 0x81", "xor rax, rcx", "or ax, cx"):
        insn = emu.decode(bytes(ks.asm(text, 0x1000)[0]), 0x1000)
        live = emu.compile(insn, None, oracle)
        for _ in range(300):
            regs = {n: _value(rng) for n in emu.REGISTER_NAMES}
            regs.update(rip=0x1000, rflags=0x202 | (rng.getrandbits(12) & STATUS))
            regs["rcx"] = rng.choice([regs["rcx"], rng.randrange(70)])
            pure, native = emu.FlatState(dict(regs)), emu.FlatState(dict(regs))
            insn.plan(pure)
            live(native)
            assert {k: v for k, v in pure.regs.items() if k != "rflags"} == \
                   {k: v for k, v in native.regs.items() if k != "rflags"}, text
            defined = ~emu.undefined_flags(insn, regs)
            assert (pure.regs["rflags"] ^ native.regs["rflags"]) & defined == 0, \
                (text, hex(pure.regs["rflags"]), hex(native.regs["rflags"]))


def test_without_the_host_cpu_such_instructions_are_declined(monkeypatch):
    """When the stubs cannot be made executable, an instruction with undefined flags is not
    emulated on live threads: auto runs it on the CPU, emulate refuses it with the reason."""
    import keystone

    from stepper import host_flags, policy

    broken = host_flags.HostFlags.__new__(host_flags.HostFlags)
    broken._functions, broken._error, broken._memory = {}, "mprotect(PROT_EXEC) refused", None
    monkeypatch.setattr(host_flags, "_host", broken)
    ks = keystone.Ks(keystone.KS_ARCH_X86, keystone.KS_MODE_64)
    shl = emu.decode(bytes(ks.asm("shl eax, cl", 0x1000)[0]), 0x1000)
    add = emu.decode(bytes(ks.asm("add eax, ecx", 0x1000)[0]), 0x1000)
    assert "host CPU" in policy.live_plan_reason(shl)
    assert policy.live_plan_reason(add) is None
    with pytest.raises(StepperError, match="host CPU"):
        policy.choose("emulate", shl)
    assert policy.choose("auto", shl).name != "emulate"
