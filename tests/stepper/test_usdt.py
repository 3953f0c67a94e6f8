"""USDT probes: `.note.stapsdt` read from programs built here with <sys/sdt.h> (with and
without semaphores), `usdt:` specs counted end to end, arguments decoded equal to what the
program passes, semaphores raised while probed and taken back at removal and detach; and
Debian's python3.11 and libstdc++ where they carry the notes."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from stepper import api, usdt
from tests.support.runs import probe_specs

SDT_H = "/usr/include/x86_64-linux-gnu/sys/sdt.h"
PYTHON = "/usr/bin/python3.11"
N = 4


@pytest.fixture(autouse=True)
def _need_sdt():
    if not os.path.exists(SDT_H) and not os.path.exists("/usr/include/sys/sdt.h"):
        pytest.skip("<sys/sdt.h> is missing (install systemtap-sdt-dev)")


def nm(exe: str) -> dict[str, int]:
    out = subprocess.run(["nm", exe], capture_output=True, text=True, check=True).stdout
    return {f[2]: int(f[0], 16) for f in (line.split() for line in out.splitlines())
            if len(f) == 3}


def file_byte(exe: str, vaddr: int) -> int:
    from stepper.symbols import ElfSymbols
    return ElfSymbols.load(exe).read(vaddr, 1)[0]


def test_notes_of_a_program_with_semaphores(build):
    exe = build("usdt_sem")
    found = {n.label: n for n in usdt.notes(exe)}
    assert set(found) == {"demo:plain", "demo:tick"}
    symbols = nm(exe)
    assert found["demo:plain"].semaphore == symbols["demo_plain_semaphore"]
    assert found["demo:tick"].semaphore == symbols["demo_tick_semaphore"]
    for note in found.values():
        assert file_byte(exe, note.address) == 0x90   # the site is sdt.h's nop
    assert [(a.size, a.signed) for a in found["demo:plain"].args] == [(4, True), (8, True),
                                                                        (1, True)]
    assert usdt.note_at(exe, found["demo:tick"].address) == found["demo:tick"]
    assert usdt.note_at(exe, found["demo:tick"].address + 1) is None


def test_notes_without_semaphores(build):
    notes = usdt.notes(build("usdt_plain"))
    assert {n.label for n in notes} == {"demo:plain", "demo:tick"}
    assert all(n.semaphore == 0 for n in notes)


def test_operands_read_from_registers_and_memory():
    regs = {"rax": 0x1122334455667788, "rbx": 0x1000, "rcx": 3, "rbp": 0x2000, "rsi": 0xff,
            "rip": 0x400000}
    memory = {0x1ff0: (-5).to_bytes(8, "little", signed=True),
              0x1018: (7).to_bytes(4, "little"), 0x400011: b"\x2a"}

    def read(address: int, size: int) -> bytes:
        return memory[address][:size]

    args = usdt.parse_args("-4@%eax 8@%rax -8@-16(%rbp) 4@(%rbx,%rcx,8) 1@%ah -1@%sil "
                           "-4@$-9 1@16(%rip)")
    values = [a.read(regs, read) for a in args]
    assert values == [0x55667788, 0x1122334455667788, -5, 7, 0x77, -1, -9, 42]


def test_bad_operand_is_one_line():
    with pytest.raises(usdt.UsdtError, match="not understood"):
        usdt.parse_args("8@%rax+")


def counts(report: dict) -> dict[str, int]:
    return {p["symbol"]: p["hits"] for p in report["probes"]}


@pytest.mark.parametrize("name,enabled", [("usdt_plain", 0), ("usdt_sem", N)])
def test_hits_equal_passes_and_semaphore_while_probed(build, tmp_path, name, enabled):
    exe = build(name)
    plain = subprocess.run([exe, str(N)], capture_output=True, text=True, check=True).stdout
    assert plain.splitlines()[-1] == "enabled 0"
    run, report = probe_specs(tmp_path, ["usdt:demo:*"], [exe, str(N)])
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == f"enabled {enabled}"
    assert counts(report) == {"usdt:demo:plain": N, "usdt:demo:tick": N}
    assert all(p["strategy"] == "emulate" for p in report["probes"])


def test_spec_qualified_by_object_and_errors(build, tmp_path):
    exe = build("usdt_sem")
    run, report = probe_specs(tmp_path, [f"usdt:{os.path.basename(exe)}:demo:tick"],
                              [exe, "2"])
    assert counts(report) == {"usdt:demo:tick": 2}
    for spec, message in [("usdt:demo:nope", "no USDT probe matches demo:nope"),
                          ("usdt:demo", "bad USDT probe spec")]:
        run, report = probe_specs(tmp_path, [spec], [exe, "2"])
        assert run.returncode == 2 and report is None
        assert run.stderr.count("\n") == 1 and message in run.stderr
        assert run.stdout == ""   # the program never started


def probed_run(exe: str, argv: list[str], on_hit, tmp_path):
    """Spawn `exe` with a breakpoint on each of its USDT sites, the semaphores held; the
    program's stdout lines and the process."""
    out = tmp_path / "stdout"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    saved = os.dup(1)
    try:
        os.dup2(fd, 1)
        proc = api.spawn([exe, *argv])
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(fd)
    bias = proc.load_bias
    bps = {}
    for note in usdt.notes(exe):
        bp = proc.break_at(bias + note.address,
                           callback=lambda hit, note=note: on_hit(proc, note, hit))
        if note.semaphore:
            proc.hold_semaphore(bp, bias + note.semaphore)
        bps[note.name] = bp
    return proc, bps, out


@pytest.mark.parametrize("name", ["usdt_plain", "usdt_sem"])
def test_arguments_equal_what_the_program_passes(build, tmp_path, name):
    seen = []
    proc, _bps, out = probed_run(
        build(name), [str(N)], lambda p, note, hit: seen.append(
            f"{note.name} " + " ".join(str(a.read(hit.regs, hit.read)) for a in note.args)),
        tmp_path)
    assert proc.run().exit_code == 0
    printed = [line for line in out.read_text().splitlines()
               if line.startswith(("plain", "tick"))]
    assert len(printed) == 2 * N
    assert seen == printed


def test_semaphore_taken_back_when_the_breakpoint_is_removed(build, tmp_path):
    def on_hit(proc, note, hit):
        if note.name == "tick":
            proc.remove(bps["tick"])   # at the first tick: the program sees it off from then

    proc, bps, out = probed_run(build("usdt_sem"), [str(N)], on_hit, tmp_path)
    assert proc.run().exit_code == 0
    assert out.read_text().splitlines()[-1] == "enabled 1"


def test_semaphore_taken_back_at_detach(build, tmp_path):
    proc, bps, out = probed_run(build("usdt_sem"), [str(N)],
                                lambda p, note, hit: note.name == "tick" and p.detach(),
                                tmp_path)
    status = proc.run()
    assert status.detached
    _pid, wait_status = os.waitpid(proc.pid, 0)   # our child, running on untraced
    assert os.waitstatus_to_exitcode(wait_status) == 0
    # The detach asked for in the first tick's callback happens at the loop's next step:
    # the program may pass one more tick before it (run() documents this), never more.
    assert out.read_text().splitlines()[-1] in ("enabled 1", "enabled 2")


def test_semaphores_of_a_forked_child_taken_back_at_detach(build, tmp_path):
    """The child (which runs the loop first) detaches the tree at its first tick: its own
    count goes back (it sees tick enabled once), and so does the parent's (never)."""
    proc, bps, out = probed_run(build("usdt_sem"), [str(N), "fork"],
                                lambda p, note, hit: note.name == "tick" and p.detach(),
                                tmp_path)
    assert proc.run().detached
    _pid, wait_status = os.waitpid(proc.pid, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 0
    lines = out.read_text().splitlines()
    summary = [line for line in lines if line in ("child", "parent")
               or line.startswith("enabled")]
    # (one more tick may pass before the detach, as in the test above)
    assert summary[0] == "child" and summary[1] in ("enabled 1", "enabled 2")
    assert summary[2:] == ["parent", "enabled 0"]


def test_list_usdt(build):
    exe = build("usdt_sem")
    run = subprocess.run([sys.executable, "-m", "stepper.cli", "list", "usdt", exe],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    rows = [line.split() for line in run.stdout.splitlines()]
    assert rows[0] == ["provider", "name", "address", "semaphore", "arguments"]
    symbols = nm(exe)
    by_name = {r[1]: r for r in rows[1:]}
    assert int(by_name["tick"][3], 16) == symbols["demo_tick_semaphore"]
    assert [n.args_text for n in usdt.notes(exe) if n.name == "tick"] == [
        " ".join(by_name["tick"][4:])]


# -- Debian's own binaries ----------------------------------------------------------------

def python_notes() -> list:
    if not os.path.exists(PYTHON):
        pytest.skip(f"{PYTHON} is not installed")
    notes = usdt.notes(PYTHON)
    if not any(n.label == "python:function__entry" for n in notes):
        pytest.skip(f"{PYTHON} has no python:function__entry USDT note")
    return notes


def test_python_function_entry(tmp_path):
    """CPython 3.11 fires function__entry from its tracing path only: the script sets a
    profile function, then calls work() 7 times (docs/usdt.md)."""
    (note,) = [n for n in python_notes() if n.label == "python:function__entry"]
    assert note.semaphore
    script = tmp_path / "calls.py"
    script.write_text("import sys\nsys.setprofile(lambda *a: None)\n"
                      "def work(n):\n    return n + 1\n\nfor i in range(7):\n    work(i)\n")
    seen = []

    def on_hit(proc, hit_note, hit):
        if hit_note.name != "function__entry":
            return
        file, func, line = (a.read(hit.regs, hit.read) for a in hit_note.args)
        seen.append((hit.read(file, 256).split(b"\0")[0].decode(),
                     hit.read(func, 64).split(b"\0")[0].decode(), line))

    proc, _bps, _out = probed_run(PYTHON, ["-S", str(script)], on_hit, tmp_path)
    assert proc.run().exit_code == 0
    mine = [s for s in seen if s[0] == str(script)]
    assert ("work" in {s[1] for s in mine}) and [s for s in mine if s[1] == "work"] == [
        (str(script), "work", 3)] * 7


def test_python_list_and_cli_probe(tmp_path):
    python_notes()
    run = subprocess.run([sys.executable, "-m", "stepper.cli", "list", "usdt", PYTHON],
                         capture_output=True, text=True)
    assert run.returncode == 0 and re.search(r"^python +function__entry ", run.stdout, re.M)
    script = tmp_path / "calls.py"
    script.write_text("import sys\nsys.setprofile(lambda *a: None)\n"
                      "def work(n):\n    return n + 1\n\nfor i in range(7):\n    work(i)\n")
    run, report = probe_specs(tmp_path, ["usdt:python:function__entry"],
                              [PYTHON, "-S", str(script)])
    assert run.returncode == 0, run.stderr
    assert counts(report)["usdt:python:function__entry"] >= 7


def test_libstdcxx_throw_and_catch(build, tmp_path):
    exe = build("cxx_throw")
    from stepper.loader import library_closure
    libstdcxx = next((p for p in library_closure(exe) if "libstdc++" in p), None)
    if libstdcxx is None or not any(n.provider == "libstdcxx" for n in usdt.notes(libstdcxx)):
        pytest.skip("libstdc++ has no libstdcxx USDT notes")
    run, report = probe_specs(tmp_path, ["usdt:libstdcxx:throw", "usdt:libstdcxx:catch"],
                              [exe])
    assert run.returncode == 0, run.stderr
    caught = int(run.stdout.split()[-1])
    assert caught == 3   # i = 0, 2, 4 of 0..4
    assert counts(report) == {"usdt:libstdcxx:throw": caught, "usdt:libstdcxx:catch": caught}
