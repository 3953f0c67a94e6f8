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
