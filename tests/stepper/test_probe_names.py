"""`stepper probe` with probes by name, end to end through the CLI on programs built here:
symbols in PIE and non-PIE executables, libc, a dlopen'ed library, globs, FILE:LINE, attach,
and every bad-input case (one line, non-zero exit, the program never started)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TRACEES = Path(__file__).parent / "tracees"
N = 5   # names_prog's default loop count: t_one 4N, t_two N, t_three N, getpid N, main 1


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, str]:
    """Every program and library of these tests, compiled once."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the tracees")
    out = tmp_path_factory.mktemp("names")
    prog = str(TRACEES / "names_prog.c")
    plugin = str(TRACEES / "names_plugin.c")

    def gcc(*args: str) -> None:
        subprocess.run(["gcc", *args], check=True, cwd=out)

    gcc("-O0", "-g", "-pie", "-fPIE", "-o", "prog_pie", prog)
    gcc("-O0", "-g", "-no-pie", "-o", "prog_nopie", prog)
    gcc("-O0", "-shared", "-fPIC", "-o", "names_plugin.so", plugin)
    gcc("-O0", "-shared", "-fPIC", "-o", "libnamesa.so", plugin)
    gcc("-O0", "-shared", "-fPIC", "-o", "libnamesb.so", plugin)
    gcc("-O0", "-o", "dl", str(TRACEES / "names_dl.c"), "-ldl")
    gcc("-O0", "-o", "linked", str(TRACEES / "names_dl.c"), "-ldl", f"-L{out}",
        "-Wl,--no-as-needed", "-lnamesa", "-lnamesb", f"-Wl,-rpath,{out}")
    return {name: str(out / name) for name in
            ("prog_pie", "prog_nopie", "names_plugin.so", "dl", "linked")}


def probe(specs: list[str], argv: list[str], tmp_path: Path, *extra: str,
          stdin: bytes | None = None) -> tuple[subprocess.CompletedProcess, dict | None]:
    """Run `stepper probe -p SPEC... -- argv` and read back its JSON report."""
    report = tmp_path / f"report-{len(os.listdir(tmp_path))}.json"
    cmd = [sys.executable, "-m", "stepper.cli", "probe", "--quiet", "--json", str(report),
           *extra]
    for spec in specs:
        cmd += ["-p", spec]
    run = subprocess.run(cmd + ["--", *argv], capture_output=True, input=stdin, timeout=300)
    return run, (json.loads(report.read_text()) if report.exists() else None)


def hits_by_symbol(report: dict) -> dict[str, int]:
    return {p["symbol"]: p["hits"] for p in report["probes"]}


def plain(argv: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, input=stdin, timeout=60)


def line_of(marker: str) -> int:
    text = (TRACEES / "names_prog.c").read_text().splitlines()
    return next(i for i, line in enumerate(text, 1) if marker in line)


# -- names in the executable and in libc ------------------------------------------------------

@pytest.mark.parametrize("exe", ["prog_pie", "prog_nopie"])
def test_symbols_offsets_and_libc(built, tmp_path, exe):
    argv = [built[exe]]
    run, report = probe(["t_one", "t_two", "main", "t_three+0x4", "libc.so.6:getpid"],
                        argv, tmp_path)
    assert (run.stdout, run.returncode, run.stderr) == (plain(argv).stdout, 0, b"")
    assert hits_by_symbol(report) == {"t_one": 4 * N, "t_two": N, "main": 1,
                                      "t_three+0x4": N, "getpid": N}
    rows = {p["symbol"]: p for p in report["probes"]}
    assert rows["getpid"]["object"] == "libc.so.6"
    assert rows["getpid"]["spec"] == "libc.so.6:getpid"
    assert rows["t_one"]["object"] == exe and rows["t_one"]["spec"] == "t_one"


@pytest.mark.parametrize("exe", ["prog_pie", "prog_nopie"])
def test_glob_probes_every_function(built, tmp_path, exe):
    """'*' probes every function of the program, crt helpers included: output identical, the
    exit status propagated, each probe carrying the glob, known call counts exact."""
    argv = [built[exe], str(N), "7"]
    run, report = probe(["*"], argv, tmp_path)
    unprobed = plain(argv)
    assert (run.stdout, run.returncode) == (unprobed.stdout, 7)
    hits = hits_by_symbol(report)
    assert {k: hits[k] for k in ("t_one", "t_two", "t_three", "main", "_start")} == {
        "t_one": 4 * N, "t_two": N, "t_three": N, "main": 1, "_start": 1}
    assert {p["spec"] for p in report["probes"]} == {"*"}
    assert all(p["object"] == exe for p in report["probes"])
    assert report["exit_code"] == 7


def test_glob_and_exact_name_probe_an_address_once(built, tmp_path):
    run, report = probe(["t_one", "t_*"], [built["prog_pie"]], tmp_path)
    assert run.returncode == 0
    specs = {p["symbol"]: p["spec"] for p in report["probes"]}
    assert specs == {"t_one": "t_one", "t_two": "t_*", "t_three": "t_*"}  # first spec wins


def test_file_line(built, tmp_path):
    line = line_of("LINE: t_three body")
    run, report = probe([f"names_prog.c:{line}"], [built["prog_pie"]], tmp_path)
    assert run.returncode == 0 and report["probes"]
    assert all(p["hits"] == 3 * N for p in report["probes"])
    assert all(p["symbol"].startswith("t_three+") for p in report["probes"])


def test_ifunc_probes_the_implementations(built, tmp_path):
    """libc's strlen is an IFUNC: its probes are the implementations the resolver can pick
    (none of them named strlen); together they see every call printf makes, at least one."""
    run, report = probe(["libc.so.6:strlen"], [built["prog_pie"]], tmp_path)
    assert run.returncode == 0
    symbols = [p["symbol"] for p in report["probes"]]
    assert len(symbols) > 1 and "strlen" not in symbols
    assert all(p["spec"] == "libc.so.6:strlen" for p in report["probes"])


# -- libraries loaded later -------------------------------------------------------------------

def test_dlopened_library_gets_its_probes(built, tmp_path):
    argv = [built["dl"], built["names_plugin.so"], "7"]
    run, report = probe(["names_plugin.so:plug_*"], argv, tmp_path)
    assert (run.stdout, run.returncode) == (plain(argv).stdout, 0)
    # plug_init runs from the library's constructor, inside dlopen: the probes were in first
    assert hits_by_symbol(report) == {"plug_fn": 7, "plug_init": 1, "plug_ctor": 1}
    assert {p["object"] for p in report["probes"]} == {"names_plugin.so"}
    assert {p["spec"] for p in report["probes"]} == {"names_plugin.so:plug_*"}
    assert report["warnings"] == []


def test_never_dlopened_library_is_a_warning_at_exit(built, tmp_path):
    argv = [built["dl"], "-"]
    run, report = probe(["names_plugin.so:plug_fn"], argv, tmp_path)
    assert (run.stdout, run.returncode) == (b"sum=0\n", 0)
    assert report["probes"] == []
    assert report["warnings"] == ["probe spec 'names_plugin.so:plug_fn': names_plugin.so was "
                                  "never loaded"]
    loud = subprocess.run([sys.executable, "-m", "stepper.cli", "probe", "-p",
                           "names_plugin.so:plug_fn", "--", *argv], capture_output=True,
                          timeout=120)
    assert b"stepper: warning: probe spec 'names_plugin.so:plug_fn'" in loud.stderr
    assert b"inserting" not in loud.stderr and b"inserted" not in loud.stderr  # not a tty


def test_linked_library_by_soname(built, tmp_path):
    argv = [built["linked"], "-"]
    run, report = probe(["libnamesb.so:plug_fn", "libnamesb.so:plug_init"], argv, tmp_path)
    assert run.returncode == 0
    assert [p["object"] for p in report["probes"]] == ["libnamesb.so"] * 2
    # its constructor ran before main, after the loader mapped it: already probed
    assert hits_by_symbol(report) == {"plug_fn": 0, "plug_init": 1}


# -- bad input: one line, exit 2, the program never ran ---------------------------------------

BAD = [
    ("prog_pie", "t_onee", "no function is named t_onee"),
    ("prog_pie", "t_one+2", "is inside the instruction"),
    ("prog_pie", "t_one+0x400", "past the end of t_one"),
    ("prog_pie", "t_one+x", "bad offset 'x'"),
    ("prog_pie", "libnosuch.so:f", "never loads libnosuch.so"),
    ("prog_pie", "names_prog.c:1", "no code at line 1"),
    ("prog_pie", "nosuch.c:3", "no source file matching 'nosuch.c'"),
    ("prog_pie", "zz_*", "no function matches"),
    ("prog_nopie", "libc.so.6:no_such_function", "no function is named no_such_function"),
    ("linked", "plug_fn", "matches in several libraries"),
    ("dl", "dl.c:3", "has no DWARF line table"),
]


@pytest.mark.parametrize("exe,spec,expected", BAD, ids=[b[1] for b in BAD])
def test_bad_spec_is_one_line_and_nothing_runs(built, tmp_path, exe, spec, expected):
    run, report = probe(["main", spec], [built[exe], "-"], tmp_path)
    text = run.stderr.decode()
    assert text.startswith("stepper: error: ") and text.count("\n") == 1, text
    assert expected in text
    assert (run.returncode, run.stdout, report) == (2, b"", None)


def test_bad_symbol_in_a_dlopen_library_found_by_path(built, tmp_path):
    plugin = built["names_plugin.so"]
    run, _ = probe([f"{plugin}:nope"], [built["dl"], plugin], tmp_path)
    assert run.returncode == 2 and run.stdout == b""
    assert "no function is named nope" in run.stderr.decode()


def test_missing_program(tmp_path):
    run, _ = probe(["main"], ["/nonexistent/prog"], tmp_path)
    assert run.returncode == 2 and "cannot run /nonexistent/prog" in run.stderr.decode()


# -- attach ------------------------------------------------------------------------------------

def test_attach_by_pid_names_resolve_in_the_running_process(built, tmp_path):
    """Attach to a program waiting on stdin: its main is already past (0 hits), libc's dlopen
    and the library it then dlopens are probed; stepper ends when the program does."""
    plugin = built["names_plugin.so"]
    target = subprocess.Popen([built["dl"], plugin, "4", "wait"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    try:
        assert target.stdout.readline() == b"ready\n"
        report_path = tmp_path / "attach.json"
        tracer = subprocess.Popen(
            [sys.executable, "-m", "stepper.cli", "probe", "--json", str(report_path),
             "--pid", str(target.pid), "-p", "main", "-p", "names_plugin.so:plug_fn",
             "-p", "libc.so.6:dlopen"], stderr=subprocess.PIPE)
        ready = tracer.stderr.readline().decode()
        assert ready.startswith(f"stepper: attached to {target.pid} with 2 probes"), ready
        target.stdin.write(b"go\n")
        target.stdin.flush()
        assert target.stdout.read() == b"sum=18\n"
        assert target.wait(timeout=60) == 0
        assert tracer.wait(timeout=120) == 0, tracer.stderr.read()
        report = json.loads(report_path.read_text())
        assert hits_by_symbol(report) == {"main": 0, "dlopen": 1, "plug_fn": 4}
        assert report["warnings"] == []
        assert report["exit_code"] == 0 and not report["detached"]
    finally:
        target.kill()
        target.wait()


def test_attach_bad_spec_leaves_the_process_alone(built, tmp_path):
    target = subprocess.Popen([built["dl"], "-", "1", "wait"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    try:
        assert target.stdout.readline() == b"ready\n"
        run = subprocess.run([sys.executable, "-m", "stepper.cli", "probe", "--pid",
                              str(target.pid), "-p", "no_such_fn"], capture_output=True,
                             timeout=120)
        text = run.stderr.decode()
        assert run.returncode == 2 and text.count("\n") == 1 and "no_such_fn" in text
        with open(f"/proc/{target.pid}/status") as f:
            assert "TracerPid:\t0\n" in f.read()   # never attached
        out, _ = target.communicate(b"go\n", timeout=60)
        assert (out, target.returncode) == (b"sum=0\n", 0)
    finally:
        target.kill()
        target.wait()


# -- thousands of probes, progress on a terminal only ------------------------------------------

def test_every_libc_function_with_progress_on_a_terminal(built, tmp_path):
    """One glob, thousands of sites (every function of libc): the program's output and exit
    status are unchanged, and with stderr on a terminal insertion reports its progress."""
    import pty

    argv = [built["prog_pie"], str(N), "3"]
    report_path = tmp_path / "all.json"
    primary, secondary = pty.openpty()
    stdout = tmp_path / "stdout"
    try:
        with open(stdout, "wb") as out:
            tracer = subprocess.Popen([sys.executable, "-m", "stepper.cli", "probe", "--json",
                                       str(report_path), "-p", "libc.so.6:*", "--", *argv],
                                      stdout=out, stderr=secondary)
        os.close(secondary)
        secondary = -1
        terminal = _drain(primary)   # while it runs: a full terminal would block it
        returncode = tracer.wait(timeout=600)
    finally:
        os.close(primary)
        if secondary >= 0:
            os.close(secondary)
    assert (stdout.read_bytes(), returncode) == (plain(argv).stdout, 3)
    report = json.loads(report_path.read_text())
    assert len(report["probes"]) > 2000
    assert hits_by_symbol(report)["getpid"] == N
    assert f"stepper: inserted {len(report['probes'])} probes" in terminal, terminal[-500:]
    assert "getpid" in terminal   # the table, on the terminal


def _drain(fd: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:   # EIO: the other side is closed and everything was read
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")
