"""`stepper probe` over a process tree: hits counted per process and in total through fork,
exec of itself or of another program (every named spec resolved again in the new image), a
shell's command substitutions, and #! scripts run as programs. Ground truth: each process of
the `family` tracee prints how many times it called the probed f (which calls sched_yield
once per call)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter

import pytest

from tests.support.runs import probe_specs, run_plain


def probe(tmp_path, specs: list[str], argv: list[str], *options: str):
    run, report = probe_specs(tmp_path, specs, argv, *options)
    assert "Traceback" not in run.stderr, run.stderr
    return run, report


def printed_calls(stdout: str) -> Counter:
    """pid -> calls of f, from the `pid=P f=N` lines (an exec'd image adds its own line)."""
    calls: Counter = Counter()
    for pid, n in re.findall(r"pid=(\d+) f=(\d+)", stdout):
        calls[int(pid)] += int(n)
    return calls


def hits_by_pid(report: dict, spec: str) -> Counter:
    return Counter({p["pid"]: next(q["hits"] for q in p["probes"] if q["spec"] == spec)
                    for p in report["processes"]})


@pytest.mark.parametrize("mode", ["auto", "xol", "boost"])
def test_fork_and_exec_of_another_program_count_per_process(build, tmp_path, mode):
    exe, other = build("family"), build("family_other")
    plain = run_plain([exe, other])
    run, report = probe(tmp_path, ["f", "libc.so.6:sched_yield"], [exe, other], "--mode", mode)
    assert run.returncode == plain.returncode == 3, run.stderr
    assert sorted(re.findall(r"f=\d+", run.stdout)) == \
        sorted(re.findall(r"f=\d+", plain.stdout.decode()))
    calls = printed_calls(run.stdout)
    assert sorted(calls.values()) == [4, 5, 6]   # root, exits 7, 2 + 4 across its exec
    for spec in ("f", "libc.so.6:sched_yield"):
        assert +hits_by_pid(report, spec) == calls
    by_pid = {p["pid"]: p for p in report["processes"]}
    root = report["processes"][0]
    assert (root["exit_code"], root["signal"], root["argv0"]) == (3, None, exe)
    for pid, entry in by_pid.items():
        if pid != root["pid"]:
            assert entry["ppid"] == root["pid"]
            assert set(entry) == {"pid", "ppid", "argv0", "exit_code", "signal", "probes"}
    ends = {by_pid[pid]["exit_code"]: calls[pid] for pid in by_pid}
    assert ends == {3: 4, 7: 5, 0: 6}
    exec_d = next(p for p in by_pid.values() if p["exit_code"] == 0)
    assert exec_d["argv0"] == other
    # the new image's f was found again, at its own address, and counted (4 calls there)
    f_sites = {p["object"]: p for p in report["probes"] if p["spec"] == "f"}
    assert f_sites["family_other"]["hits"] == 4 and f_sites["family"]["hits"] == 11
    assert f_sites["family_other"]["address"] != f_sites["family"]["address"]
    assert sum(p["hits"] for p in report["probes"] if p["spec"] == "f") == 15
    assert "15  libc.so.6:sched_yield" in run.stderr and "3 processes" in run.stderr


def test_shell_command_substitutions(build, tmp_path):
    """bash forks a subshell per $(...), which execs the program: every process counted."""
    exe = build("family")
    script = f'a=$({exe}); b=$({exe} | cat); echo "$a"; echo "$b"'
    run, report = probe(tmp_path, ["libc.so.6:sched_yield"], ["bash", "-c", script])
    assert run.returncode == 0, run.stderr
    calls = printed_calls(run.stdout)
    assert sorted(calls.values()) == [2, 2, 4, 4, 5, 5]   # two runs of the family
    assert +hits_by_pid(report, "libc.so.6:sched_yield") == calls
    assert sum(p["hits"] for p in report["probes"]) == 22   # sites: one per image's libc
    # one row: the same function in every image is one site, however many libc mappings
    assert "  22  libc.so.6:sched_yield  libc.so.6  sched_yield" in run.stderr.splitlines()
    assert len(report["processes"]) > len(calls)   # bash and its subshells too, with 0
    argv0s = {p["argv0"] for p in report["processes"]}
    assert {"bash", exe} <= argv0s


def test_a_script_runs_as_a_program(build, tmp_path):
    exe = build("family")
    script = tmp_path / "run.sh"
    script.write_text(f"#!/bin/sh\n{exe}\necho after $?\n")
    script.chmod(0o755)
    plain = run_plain([str(script)])
    run, report = probe(tmp_path, ["libc.so.6:sched_yield", "getpid"], [str(script)])
    assert (run.returncode, run.stdout.count("after 3")) == (plain.returncode, 1), run.stderr
    calls = printed_calls(run.stdout)
    assert +hits_by_pid(report, "libc.so.6:sched_yield") == calls
    assert sum(calls.values()) == 11
    assert report["processes"][0]["argv0"] == str(script)


def test_script_with_a_missing_interpreter_is_one_line(tmp_path):
    script = tmp_path / "bad.sh"
    script.write_text("#!/no/such/shell -e\necho hi\n")
    script.chmod(0o755)
    run = subprocess.run([sys.executable, "-m", "stepper.cli", "probe", "-p", "getpid", "--",
                          str(script)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.strip().splitlines() == [
        f"stepper: error: cannot run {script}: its interpreter /no/such/shell does not exist"]
