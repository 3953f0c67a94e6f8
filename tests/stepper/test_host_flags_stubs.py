"""The host-flags stubs ship prebuilt (stepper/host_flags_stubs.py): the table is what its
generator makes with keystone, every stub runs the instruction it is meant to, and neither
the library nor a probe of an imul site needs keystone any more."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import capstone
import pytest

from emu.flag_oracle import OPERATIONS
from stepper import host_flags, host_flags_build
from stepper.host_flags_stubs import STUBS
from tests.support.elf import symbol
from tests.support.programs import gcc
from tests.support.runs import run_plain

#: Runs the rest of the script with `import keystone` failing, as where the fuzz extra is absent.
NO_KEYSTONE = textwrap.dedent("""\
    import sys

    class NoKeystone:
        attempts = []

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "keystone":
                self.attempts.append(name)
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoKeystone())
    """)


def test_shipped_table_is_what_the_generator_makes():
    pytest.importorskip("keystone", reason="regenerating the stubs needs keystone (fuzz extra)")
    stubs = host_flags_build.assemble()
    assert stubs == STUBS
    assert host_flags_build.render(stubs) == host_flags_build.TABLE.read_text()


def test_every_form_has_a_stub_that_runs_exactly_its_instruction():
    """Checked with capstone alone: the frame, then the meant instruction, then the frame."""
    forms = [(name, bits) for name, (widths, _) in OPERATIONS.items() for bits in widths]
    assert list(STUBS) == forms
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    before = len([s for s in host_flags.PROLOGUE.split(";") if s.strip()])
    after = len([s for s in host_flags.EPILOGUE.split(";") if s.strip()])
    frames = set()
    for (name, bits), code in STUBS.items():
        insns = list(md.disasm(code, 0))
        assert sum(i.size for i in insns) == len(code)
        texts = [f"{i.mnemonic} {i.op_str}".strip() for i in insns]
        assert len(texts) == before + 1 + after and texts[-1] == "ret"
        assert texts[before] == host_flags.instruction_text(name, bits)
        frames.add((tuple(texts[:before]), tuple(texts[before + 1:])))
    assert len(frames) == 1  # one frame around every instruction


def test_the_library_and_host_flags_never_import_keystone():
    code = NO_KEYSTONE + textwrap.dedent("""\
        import stepper.api
        from stepper import host_flags
        oracle = host_flags.get()
        assert oracle.error is None, oracle.error
        flags = oracle.operation("imul2", 64)(1 << 63, 3, 0x202)
        print(hex(flags & 0x801), NoKeystone.attempts, "keystone" in sys.modules)
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0x801", "[]", "False"]  # imul overflowed: CF and OF


IMUL_PROGRAM = r"""
#include <stdio.h>
int main(int argc, char **argv) {
    long a = argc + 0x123456789L, b = 0x9abcdef01L, flags;
    __asm__ volatile(".globl imul_site\nimul_site:\n\timul %2, %0\n\tpushfq\n\tpop %1"
                     : "+r"(a), "=r"(flags) : "r"(b) : "cc");
    printf("%ld %lx\n", a, flags & 0x8d5);
    return 0;
}
"""


@pytest.mark.parametrize("mode", ["auto", "emulate"])
def test_an_imul_site_is_emulated_without_keystone(tmp_path, mode):
    """The undefined flags of imul come from the host CPU through the shipped stubs: with
    keystone absent, emulate still emulates it (it used to refuse) and the output is the
    unprobed one, flags included."""
    (tmp_path / "imul.c").write_text(IMUL_PROGRAM)
    exe = gcc(tmp_path / "imul", tmp_path / "imul.c")
    report = tmp_path / "report.json"
    argv = ["probe", "--mode", mode, "--quiet", "--json", str(report),
            "-p", hex(symbol(exe, "imul_site")[0]), "--", exe]
    code = NO_KEYSTONE + textwrap.dedent(f"""\
        import runpy
        sys.argv = ["stepper", *{argv!r}]
        runpy.run_module("stepper.cli", run_name="__main__", alter_sys=True)
        """)
    probed = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    plain = run_plain([exe])
    assert probed.stderr == b""
    assert (probed.stdout, probed.returncode) == (plain.stdout, plain.returncode)
    data = json.loads(report.read_text())
    assert [p["hits"] for p in data["probes"]] == [1]
    assert data["steps"]["emulate"] == 1
