"""`stepper list functions|lines|vars|usdt`: what can be probed, read from the file; bad
input one line with exit status 2."""

from __future__ import annotations

import subprocess
import sys

import pytest


def stepper_list(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stepper.cli", "list", *args],
                          capture_output=True, text=True, timeout=120)


def test_functions_demangled_and_filtered(build):
    exe = build("cxx_names")
    run = stepper_list("functions", exe)
    assert run.returncode == 0, run.stderr
    names = run.stdout.splitlines()
    assert {"main", "ns::Acc::add(int)", "ns::Acc::add(double)",
            "ns::Acc::operator+=(int)", "int ns::biggest<int>(int, int)"} <= set(names)
    run = stepper_list("functions", f"{exe}:ns::Acc::*")
    assert run.stdout.splitlines() == ["ns::Acc::add(double)", "ns::Acc::add(int)",
                                       "ns::Acc::operator+=(int)"]


def test_lines_are_the_probeable_ones(build):
    from stepper.symbols import ElfSymbols

    exe = build("params_O0")
    run = stepper_list("lines", f"{exe}:work")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    from tests.support.programs import TRACEES
    declared = next(n for n, text in enumerate((TRACEES / "params.c").read_text().splitlines(),
                                               start=1) if " long work(" in text)
    assert lines[0].startswith("<work@") and lines[0].endswith(f"params.c:{declared}>")
    numbered = [int(line.split()[0]) for line in lines[1:] if line[:7].strip()]
    with_code = ElfSymbols.load(exe).lines_with_code(next(
        p for p in ElfSymbols.load(exe).source_files() if p.endswith("params.c")))
    assert numbered and set(numbered) <= set(with_code)
    assert any("long total = a + (long)strlen(s);" in line for line in lines)


def test_vars_at_the_probe_address(build):
    run = stepper_list("vars", f"{build('params_O2')}:work")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("<work+0x0>")
    assert "  param  int a  (rdi)" in lines
    assert "  param  const char * s  (rsi)" in lines
    assert "  param  long int seventh  (frame base+0)" in lines


@pytest.mark.parametrize("args,message", [
    (("vars", "/no/such/file:f"), "no such file: /no/such/file"),
    (("lines", "PROG"), "needs a function: OBJECT:FUNC"),
    (("vars", "PROG:nope"), "no function named nope"),
    (("usdt", "PROG"), "has no USDT probes"),
    (("usdt", "/etc/passwd"), "not a readable ELF file"),
])
def test_bad_input_is_one_line(build, args, message):
    args = tuple(a.replace("PROG", build("params_O0")) for a in args)
    run = stepper_list(*args)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and message in run.stderr


def test_no_dwarf(build):
    run = stepper_list("vars", f"{build('usdt_plain')}:main")
    assert run.returncode == 2 and "no DWARF debug information" in run.stderr


def test_help_does_not_import_the_list_command():
    code = ("import sys; from stepper import cli\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('stepper.commands.list' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "list " in run.stdout and run.stdout.splitlines()[-1] == "False"


def test_a_library_by_its_name():
    run = stepper_list("functions", "libc.so.6:getpid")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["getpid"]
