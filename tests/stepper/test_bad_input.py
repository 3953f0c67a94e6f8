"""Bad input: a one-line error, nothing written to the tracee, the program never started."""

from __future__ import annotations

import sys
import subprocess

import pytest

from tests.support.elf import instructions, symbol
from tests.support.runs import run_cli
from stepper import maps
from stepper.errors import StepperError


def _mid_instruction(exe: str) -> int:
    insn = next(i for i in instructions(exe, "probe_loads") if i.length > 2)
    return insn.address + 1


BAD = {
    "data": ("probes", lambda exe: symbol(exe, "g32")[0], "not in an executable mapping"),
    "unmapped": ("probes", lambda exe: 0x10, "not in an executable mapping"),
    "mid-instruction": ("probes", _mid_instruction, "not an instruction boundary"),
    "int3": ("asmmain", lambda exe: symbol(exe, "int3_site")[0], "neither emulated"),
    "hlt": ("asmmain", lambda exe: symbol(exe, "hlt_site")[0], "neither emulated"),
}


def _one_line_error(stderr: bytes, expected: str) -> None:
    text = stderr.decode()
    assert text.startswith("stepper: error: ") and text.count("\n") == 1, text
    assert expected in text


@pytest.mark.parametrize("case", sorted(BAD))
def test_cli_refuses_and_does_not_start_the_program(build, case):
    program, address_of, expected = BAD[case]
    exe = build(program)
    good = symbol(exe, "main")[0]
    run = run_cli([exe], [good, address_of(exe)], "auto")
    _one_line_error(run.stderr, expected)
    assert run.returncode == 2 and run.stdout == b""  # the program printed nothing: never ran


@pytest.mark.parametrize("case", sorted(BAD))
def test_library_refusal_writes_nothing(build, spawn_captured, case):
    program, address_of, expected = BAD[case]
    exe = build(program)
    proc, out = spawn_captured([exe])
    address = proc.load_bias + address_of(exe)
    before_maps = maps.read(proc.pid)
    mapping = maps.find(before_maps, address)
    before = proc.read(address, 16) if mapping else None
    with pytest.raises(StepperError, match=expected) as excinfo:
        proc.break_at(address)
    assert "\n" not in str(excinfo.value)
    assert maps.read(proc.pid) == before_maps  # no XOL area, nothing mapped
    if mapping:
        with open(f"/proc/{proc.pid}/mem", "rb") as mem:
            mem.seek(address)
            assert mem.read(16) == before
    assert proc.breakpoints == []
    proc.kill()
    assert out.read_bytes() == b""


def test_emulate_mode_refuses_what_emu_does_not_run(build):
    exe = build("asmmain")
    run = run_cli([exe], [symbol(exe, "syscall_site")[0]], "emulate")
    _one_line_error(run.stderr, "is not emulated")
    assert run.returncode == 2 and run.stdout == b""


@pytest.mark.parametrize("argv,expected", [
    (["-p", "0xzz", "--", "true"], "bad probe '0xzz'"),
    (["-p", "0x10", "--", "/nonexistent/program"], "cannot run /nonexistent/program"),
    (["-p", "0x10"], "no program given"),
    # The report path is checked before the program runs (echo would print "ran").
    (["--json", "/no/such/dir/r.json", "-p", "0x10", "--", "echo", "ran"], "does not exist"),
    (["--json", "/tmp", "-p", "0x10", "--", "echo", "ran"], "/tmp: it is a directory"),
])
def test_cli_bad_arguments(argv, expected):
    p = subprocess.run([sys.executable, "-m", "stepper.cli", "probe", *argv],
                       capture_output=True, timeout=60)
    assert p.returncode == 2 and p.stdout == b""
    _one_line_error(p.stderr, expected)


def test_duplicate_probe_is_refused(build):
    exe = build("probes")
    main = symbol(exe, "main")[0]
    run = run_cli([exe], [main, main], "auto")
    _one_line_error(run.stderr, "already set")
    assert run.stdout == b""
