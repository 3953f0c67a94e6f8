"""Fetch arguments bound to their probe site, through the CLI: a USDT probe's own `$argN`
(sizes and signedness from its note, in registers and in stack slots) equal to what a program
built with <sys/sdt.h> passes; DWARF parameter names and `$params` at -O0 and -O2 equal to
what the program prints; what cannot be read is one line, exit 2, nothing started; and a
Python function trace over --pid through python3.11's `function__entry`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from stepper import api, dwarf_params, usdt
from tests.support.runs import ended, probe_specs

PYTHON = "/usr/bin/python3.11"
N = 4


def jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def need_sdt() -> None:
    if not any(os.path.exists(p) for p in ("/usr/include/x86_64-linux-gnu/sys/sdt.h",
                                            "/usr/include/sys/sdt.h")):
        pytest.skip("<sys/sdt.h> is missing (install systemtap-sdt-dev)")


# -- USDT $argN -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["usdt_plain", "usdt_sem", "usdt_O0"])
def test_usdt_args_equal_what_the_program_passes(build, tmp_path, name):
    """`plain i sq neg` passes (int, long, signed char): -4@, -8@, -1@ (registers at -O2,
    stack slots at -O0); the default types are s32, s64, s8, and an explicit type wins."""
    need_sdt()
    exe = build(name)
    out = tmp_path / "t.jsonl"
    run, _ = probe_specs(tmp_path, ["usdt:demo:plain $arg1 $arg2 $arg3 u=$arg3:u8 x=$arg2",
                                    "usdt:demo:tick $arg1 $arg2"],
                         [exe, str(N)], "--trace", "--format", "jsonl", "-o", str(out))
    assert run.returncode == 0, run.stderr
    events = jsonl(out)
    plain = [e["args"] for e in events if e["probe"] == "usdt:demo:plain"]
    tick = [e["args"] for e in events if e["probe"] == "usdt:demo:tick"]
    want_plain = [tuple(map(int, l.split()[1:])) for l in run.stdout.splitlines()
                  if l.startswith("plain ")]
    want_tick = [tuple(map(int, l.split()[1:])) for l in run.stdout.splitlines()
                 if l.startswith("tick ")]
    assert len(want_plain) == N and any(v[2] < 0 for v in want_plain)
    assert [(a["arg1"], a["arg2"], a["arg3"]) for a in plain] == want_plain
    assert [a["u"] for a in plain] == [v[2] & 0xFF for v in want_plain]
    assert [a["x"] for a in plain] == [v[1] for v in want_plain]   # decimal, signed
    assert [(a["arg1"], a["arg2"]) for a in tick] == want_tick
    if name == "usdt_O0":   # the point of this build: arguments read from memory
        (note,) = [n for n in usdt.notes(exe) if n.label == "demo:plain"]
        assert all(a.kind == "mem" for a in note.args), note.args_text


def test_usdt_default_types_follow_the_note_in_text(build, tmp_path):
    need_sdt()
    run, _ = probe_specs(tmp_path, ["usdt:demo:plain sq=$arg2 h=$arg2:x64"],
                         [build("usdt_plain"), "1"], "--trace")
    assert run.returncode == 0, run.stderr
    assert re.search(r"usdt:demo:plain: sq=-3 h=0xfffffffffffffffd$", run.stderr, re.M), \
        run.stderr


def test_a_glob_over_usdt_probes_binds_each_site_to_its_own_note(build, tmp_path):
    """demo:plain has 3 arguments, demo:tick 2: under one glob each site reads its own
    note; $arg3 is a fault at tick (warned once), not a refusal of the whole glob."""
    need_sdt()
    out = tmp_path / "t.jsonl"
    run, _ = probe_specs(tmp_path, ["usdt:demo:* v=$arg2 z=$arg3"], [build("usdt_plain"),
                                                                    str(N)],
                         "--trace", "--format", "jsonl", "-o", str(out))
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("there is no $arg3: fetched as a fault there") == 1, run.stderr
    lines = run.stdout.splitlines()
    want = [(int(l.split()[2]), int(l.split()[3]) if l.startswith("plain") else None)
            for l in lines if l.startswith(("plain ", "tick "))]
    assert [(e["args"]["v"], e["args"]["z"]) for e in jsonl(out)] == want
    assert len(want) == 2 * N


# -- DWARF names ------------------------------------------------------------------------------

def work_calls(stdout: str) -> list[list[str]]:
    return [l.split()[1:] for l in stdout.splitlines() if l.startswith("work ")]


def work_site(exe: str) -> str:
    """`work` itself where its parameters are readable at the entry, else the place after
    the prologue (what the refusal at the entry names)."""
    (function,) = dwarf_params.find(exe, "work")
    after = dwarf_params.after_prologue(function) - function.low
    return "work" if not after else f"work+{after:#x}"


@pytest.mark.parametrize("name", ["params_O0", "params_O2"])
def test_parameter_names_equal_what_the_program_prints(build, tmp_path, name):
    exe = build(name)
    out = tmp_path / "t.jsonl"
    site = work_site(exe)
    assert (site == "work") == (name == "params_O2")
    # `wide` (s64 of an int) is read by the general DWARF evaluator, the others by the
    # plain register / frame-slot nodes they bind to (test below)
    run, _ = probe_specs(tmp_path, [f"{site} a s:string m2 seventh n=m4 wide=a:s64"],
                         [exe], "--trace", "--format", "jsonl", "-o", str(out))
    assert run.returncode == 0, run.stderr
    calls = work_calls(run.stdout)
    assert len(calls) == 3
    got = [e["args"] for e in jsonl(out)]
    # a (int): s32, a number; s (const char *) as a string; m2 = -2 (long: s64); n named
    assert got == [{"a": int(c[0]), "s": c[1], "m2": int(c[3]), "seventh": int(c[6]),
                    "n": int(c[5]), "wide": int(c[0])} for c in calls]


@pytest.mark.parametrize("name", ["params_O0", "params_O2"])
def test_names_bind_to_plain_nodes_where_they_can(build, name):
    """A parameter in a whole register or a CFA-based frame slot becomes the `%REG` or
    `+OFFS(%REG)` node (the per-hit cost of a register fetch); a type wider than the
    variable keeps the DWARF evaluator, which masks to the variable's size."""
    from stepper.fetch_sites import bind
    from stepper.fetchargs import parse_probe

    exe = build(name)
    site = work_site(exe)
    (function,) = dwarf_params.find(exe, "work")
    vaddr = function.low + (0 if site == "work" else int(site.split("+")[1], 16))
    line = parse_probe(f"{site} a s:string wide=a:s64")
    a, s, wide = (bind(arg, line, exe, vaddr, 0) for arg in line.args)
    assert a.type == "s32" and s.type == "string" and wide.type == "s64"
    if name == "params_O2":
        assert a.node == ("reg", "rdi") and s.node == ("reg", "rsi")
    else:
        assert a.node[0] == "deref" and a.node[2][0] == "reg"
        assert s.node[0] == "deref" and s.node[2][0] == "deref"   # the string AT the pointer
    assert wide.node[0] == "dwarf"


@pytest.mark.parametrize("name", ["params_O0", "params_O2"])
def test_params_fetches_every_scalar_parameter_with_its_type(build, tmp_path, name):
    exe = build(name)
    out = tmp_path / "t.jsonl"
    run, _ = probe_specs(tmp_path, [f"{work_site(exe)} $params"], [exe],
                         "--trace", "--format", "jsonl", "-o", str(out))
    assert run.returncode == 0, run.stderr
    calls = work_calls(run.stdout)
    got = [e["args"] for e in jsonl(out)]
    # struct point p is not a number: left out; s (a pointer) is shown as one, in hex
    assert [list(g) for g in got] == [["a", "s", "m1", "m2", "m3", "m4", "seventh"]] * 3
    for g, c in zip(got, calls):
        assert (g["a"], g["m1"], g["m2"], g["m3"], g["m4"], g["seventh"]) == (
            int(c[0]), int(c[2]), int(c[3]), int(c[4]), int(c[5]), int(c[6]))
        assert isinstance(g["s"], str) and g["s"].startswith("0x")


BAD = {
    ("params_O0", "work a"): "a at work: in a stack slot the prologue has not written yet",
    ("params_O2", "work nosuch"): "work has no parameter or variable named 'nosuch'",
    ("params_O2", "work p"): "p at work: its type point (8 bytes) is not a number",
    ("params_O2", "work a:string"): "a is a int, not a pointer: no :string",
    ("usdt_plain", "usdt:demo:tick $arg3"): "usdt:demo:tick has 2 argument(s): there is "
                                            "no $arg3",
    ("usdt_plain", "main argc"): "has no DWARF (build it with -g",
}


@pytest.mark.parametrize("name, text", sorted(BAD))
def test_what_cannot_be_read_is_one_line_and_nothing_starts(build, tmp_path, name, text):
    if name.startswith("usdt"):
        need_sdt()
    exe = build(name)   # prints at once when it runs: nothing printed, nothing started
    out = tmp_path / "never.jsonl"
    run = subprocess.run(
        [sys.executable, "-m", "stepper.cli", "probe", "-p", text, "--trace", "--format",
         "jsonl", "-o", str(out), "--", exe, "1"],
        capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("stepper: error: ") and run.stderr.count("\n") == 1
    assert BAD[name, text] in run.stderr, run.stderr
    assert run.stdout == "" and not out.exists()


# -- the library: hit.fetch ----------------------------------------------------------------

def spawn_to(exe: str, args: list[str], out):
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    saved = os.dup(1)
    try:
        os.dup2(fd, 1)
        return api.spawn([exe, *args])
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(fd)


def test_hit_fetch_binds_names_and_usdt_args_to_the_hit(build, tmp_path):
    """api.parse_fetch once, hit.fetch at each hit: a parameter name at a function, the
    USDT probe's own $argN at its site (and the ABI's $argN elsewhere)."""
    need_sdt()
    exe = build("params_O2")
    (work,) = dwarf_params.find(exe, "work")
    a, s, abi = (api.parse_fetch(t) for t in ("a", "s:string", "$arg1:s32"))
    out = tmp_path / "out"
    proc = spawn_to(exe, [], out)
    seen = []
    proc.break_at(proc.load_bias + work.low,
                  callback=lambda hit: seen.append((hit.fetch(a), hit.fetch(s), hit.fetch(abi))))
    assert proc.run().exit_code == 0
    calls = work_calls(out.read_text())
    assert seen == [(int(c[0]), c[1], int(c[0])) for c in calls] and len(seen) == 3

    exe = build("usdt_O0")
    (note,) = [n for n in usdt.notes(exe) if n.label == "demo:plain"]
    sq, neg = api.parse_fetch("$arg2"), api.parse_fetch("$arg3")
    proc = spawn_to(exe, [str(N)], out)
    seen = []
    proc.break_at(proc.load_bias + note.address,
                  callback=lambda hit: seen.append((hit.fetch(sq), hit.fetch(neg))))
    assert proc.run().exit_code == 0
    want = [tuple(map(int, l.split()[2:])) for l in out.read_text().splitlines()
            if l.startswith("plain ")]
    assert seen == want and len(seen) == N


# -- Python over --pid ------------------------------------------------------------------------

def test_python_function_trace_over_pid(tmp_path):
    """python3.11's function__entry gives file, function and line (docs/usdt.md: 3.11 fires
    it only under a profile function): a Python function tracer over --pid."""
    if not os.path.exists(PYTHON):
        pytest.skip(f"{PYTHON} is not installed")
    if not any(n.label == "python:function__entry" for n in usdt.notes(PYTHON)):
        pytest.skip(f"{PYTHON} has no python:function__entry USDT note")
    script = tmp_path / "fib.py"
    script.write_text("import sys\nsys.setprofile(lambda *a: None)\n"
                      "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"
                      "print('ready', flush=True)\nsys.stdin.read(1)\nprint(fib(5))\n")
    out = tmp_path / "t.jsonl"
    prog = subprocess.Popen([PYTHON, "-S", str(script)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    with ended(prog):
        assert prog.stdout.readline() == "ready\n"
        tracer = subprocess.Popen(
            [sys.executable, "-m", "stepper.cli", "probe", "--pid", str(prog.pid), "-p",
             "usdt:python:function__entry file=$arg1:string fn=$arg2:string line=$arg3",
             "--trace", "--format", "jsonl", "-o", str(out)],
            stderr=subprocess.PIPE, text=True)
        with ended(tracer):
            line = tracer.stderr.readline()
            assert "attached to" in line, line
            prog.stdin.write("g")
            prog.stdin.flush()
            assert prog.stdout.read() == "5\n"
            assert prog.wait(timeout=60) == 0
            assert tracer.wait(timeout=60) == 0
    fib = [e["args"] for e in jsonl(out) if e["args"]["fn"] == "fib"]
    # fib(5) makes 15 calls; line is an int (-4@: s32 by default), the def's line
    assert fib == [{"file": str(script), "fn": "fib", "line": 3}] * 15
