"""DWARF parameters read at a function's probe address equal what the program passes: six
in registers and two on the stack, at -O0 (frame slots, read after the prologue) and -O2
(registers and location lists, read at the first instruction); what cannot be read says
why."""

from __future__ import annotations

import os

import pytest

from stepper import api, dwarf_params


def spawn(exe: str, out):
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    saved = os.dup(1)
    try:
        os.dup2(fd, 1)
        return api.spawn([exe])
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(fd)


def signed(value: int, size: int) -> int:
    return value - (1 << 8 * size) if value >> (8 * size - 1) else value


@pytest.mark.parametrize("name", ["params_O0", "params_O2"])
def test_parameters_equal_what_the_program_passes(build, tmp_path, name):
    exe = build(name)
    (work,) = dwarf_params.find(exe, "work")
    assert [v.name for v in work.params] == ["a", "s", "m1", "m2", "m3", "m4", "seventh", "p"]
    assert [v.type for v in work.params][:3] == ["int", "const char *", "long int"]
    pc = dwarf_params.after_prologue(work)
    assert (pc == work.low) == (name == "params_O2")
    out = tmp_path / "stdout"
    proc = spawn(exe, out)
    seen = []

    def on_hit(hit):
        values = {v.name: dwarf_params.read_value(work, v, pc, hit.regs, hit.read,
                                                  proc.load_bias) for v in work.params}
        text = hit.read(values["s"], 16).split(b"\0")[0].decode()
        p = values["p"]
        seen.append(" ".join(["work", str(signed(values["a"], 4)), text]
                             + [str(signed(values[k], 8)) for k in ("m1", "m2", "m3", "m4",
                                                                    "seventh")]
                             + [str(signed(p & 0xFFFFFFFF, 4)), str(signed(p >> 32, 4))]))

    proc.break_at(proc.load_bias + pc, callback=on_hit)
    assert proc.run().exit_code == 0
    assert seen == [line for line in out.read_text().splitlines() if line.startswith("work")]
    assert len(seen) == 3


def test_unreadable_values_say_why(build):
    exe = build("params_O0")
    (work,) = dwarf_params.find(exe, "work")
    a = work.params[0]
    with pytest.raises(dwarf_params.DwarfValueError, match="prologue has not written"):
        dwarf_params.read_value(work, a, work.low, {"rsp": 0, "rip": work.low}, lambda *_: b"")
    assert "not written" in dwarf_params.describe_location(work, a, work.low)
    (work2,) = dwarf_params.find(build("params_O2"), "work")
    total = next(v for v in work2.variables if v.name == "local")
    assert dwarf_params.describe_location(work2, total, work2.low) == "optimised out here"
    with pytest.raises(dwarf_params.DwarfValueError, match="optimised out"):
        dwarf_params.read_value(work2, total, work2.low, {}, lambda *_: b"")


def test_cxx_functions_by_signature(build):
    exe = build("cxx_names")
    found = dwarf_params.find(exe, "ns::Acc::add")
    assert sorted(f.title for f in found) == ["ns::Acc::add(double)", "ns::Acc::add(int)"]
    (one,) = dwarf_params.find(exe, "ns::Acc::add(int)")
    assert [(v.name, v.type) for v in one.params] == [("this", "ns::Acc *const"), ("v", "int")]


def test_a_function_split_hot_and_cold(build, tmp_path):
    import subprocess

    exe = build("params_O2")
    symbols = {line.split()[2]: int(line.split()[0], 16) for line in subprocess.run(
        ["nm", exe], capture_output=True, text=True, check=True).stdout.splitlines()
        if len(line.split()) == 3}
    if "check.cold" not in symbols:
        pytest.skip("this gcc did not split check() into a cold part")
    (check,) = dwarf_params.find(exe, "check")
    assert check.low == symbols["check"]
    out = tmp_path / "stdout"
    proc = spawn(exe, out)
    seen = []
    proc.break_at(proc.load_bias + check.low, callback=lambda hit: seen.append(
        dwarf_params.read_value(check, check.params[0], check.low, hit.regs, hit.read)))
    assert proc.run().exit_code == 0
    assert [f"check {v}" for v in seen] == [line for line in out.read_text().splitlines()
                                            if line.startswith("check")]


@pytest.mark.parametrize("name", ["params_O0", "params_O2"])
def test_a_stripped_program_reads_its_separate_debug_file(build, tmp_path, name):
    """`objcopy --strip-debug --add-gnu-debuglink` (what distributions ship, the DWARF in a
    -dbgsym package): the functions, their line rows and `-p 'prog:work a s:string'` come
    from the debug file, as from the unstripped program."""
    import json
    import shutil
    import subprocess
    import sys

    if shutil.which("objcopy") is None:
        pytest.skip("objcopy (binutils) is needed to split the debug file")
    full = build(name)
    debug, stripped = tmp_path / "prog.debug", tmp_path / "prog"
    subprocess.run(["objcopy", "--only-keep-debug", full, str(debug)], check=True)
    subprocess.run(["objcopy", "--strip-debug", f"--add-gnu-debuglink={debug}", full,
                    str(stripped)], check=True, cwd=tmp_path)
    ours, theirs = dwarf_params.functions(str(stripped)), dwarf_params.functions(full)
    assert theirs and [(f.name, f.low, f.high, f.variables) for f in ours] == \
        [(f.name, f.low, f.high, f.variables) for f in theirs]
    assert all(f.path == str(stripped) and f.debug_path == str(debug) for f in ours)
    (work,) = dwarf_params.find(str(stripped), "work")
    (original,) = dwarf_params.find(full, "work")
    at = dwarf_params.after_prologue(work)   # -O0: past the prologue, from the line table
    assert dwarf_params.line_rows(work) and at == dwarf_params.after_prologue(original)
    spec = "prog:work" + (f"+{at - work.low:#x}" if at != work.low else "")
    out = tmp_path / "trace.jsonl"
    run = subprocess.run([sys.executable, "-m", "stepper.cli", "probe", "--quiet", "-p",
                          f"{spec} a s:string m1", "--format", "jsonl", "-o", str(out), "--",
                          str(stripped)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    printed = [line.split()[1:4] for line in run.stdout.splitlines() if line.startswith("work")]
    got = [json.loads(line)["args"] for line in out.read_text().splitlines()]
    assert [[str(a["a"]), a["s"], str(a["m1"])] for a in got] == printed and len(got) == 3
