"""The program's own SIGTRAP state across hits (stepper.sigtrap), and a program that sets TF
itself with popf (never boosted: stepper.strategies.boost). Tracees: tests/stepper/tracees/sigtrap_state.c
and popf_tf.c, each run unprobed and under `stepper probe` in every mode, compared byte for
byte (stdout and exit status)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.elf import instructions, symbol
from tests.support.runs import ended, run_plain
from stepper import api
from stepper.errors import StepperError

TRACEES = Path(__file__).parent / "tracees"
MODES = ("emulate", "xol", "boost", "reinsert", "auto")


@pytest.fixture(scope="module")
def tracee(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the tracees")
    out = tmp_path_factory.mktemp("sigtrap")
    built = {}
    for name in ("sigtrap_state", "popf_tf"):
        subprocess.run(["gcc", "-O1", "-o", str(out / name), str(TRACEES / f"{name}.c")],
                       check=True)
        built[name] = str(out / name)
    return built


def probe(tmp_path, mode: str, specs: list[str], argv: list[str]):
    """`stepper probe` (JSON report read back): (CompletedProcess, {spec: hits})."""
    report = tmp_path / f"report-{mode}.json"
    cmd = [sys.executable, "-m", "stepper.cli", "probe", "--mode", mode, "--quiet",
           "--json", str(report)]
    for spec in specs:
        cmd += ["-p", spec]
    p = subprocess.run(cmd + ["--", *argv], capture_output=True, timeout=120)
    hits = {}
    if report.exists():
        hits = {row["spec"]: row["hits"] for row in json.loads(report.read_text())["probes"]}
    return p, hits


STATE_PROBES = ["sigtrap_state:trap_handler", "sigtrap_state:trap_callee"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("setup", ["handler", "nodefer", "ignore", "blocked", "blocked_pending"])
def test_sigtrap_disposition_and_mask_as_unprobed(tracee, tmp_path, mode, setup):
    """A probe on the SIGTRAP handler itself and on a function it (and main) calls: the
    handler, flags, action mask and blocked mask read back by the program, in the handler and
    after it, and the program's later SIGTRAPs, are what they are unprobed."""
    argv = [tracee["sigtrap_state"], setup]
    expected = run_plain(argv)
    got, hits = probe(tmp_path, mode, STATE_PROBES, argv)
    assert got.stdout.decode() == expected.stdout.decode()
    assert got.returncode == expected.returncode, got.stderr.decode()
    assert b"warning" not in got.stderr
    if setup == "ignore":  # no handler runs: main's call only
        assert hits["sigtrap_state:trap_callee"] == 1
    else:  # really hit, in the handler (twice) and out of it
        assert hits["sigtrap_state:trap_callee"] >= 3
        assert hits["sigtrap_state:trap_handler"] == expected.returncode  # = its runs


def test_reset_stepper_cannot_see_is_never_silent(tracee, tmp_path):
    """SIG_IGN set, then a probe hit before any SIGTRAP reached stepper: the kernel's reset
    leaves no trace of SIG_IGN (docs/under_fire.md), so the program's next SIGTRAP ends it;
    stepper says so once, naming the probe, and ends the way the program did."""
    argv = [tracee["sigtrap_state"], "ignore_late"]
    assert run_plain(argv).returncode == 0  # unprobed the SIGTRAP is ignored
    got, hits = probe(tmp_path, "emulate", STATE_PROBES, argv)
    err = got.stderr.decode()
    assert hits["sigtrap_state:trap_callee"] == 1
    assert err.count("stepper: warning:") == 1, err
    assert "trap_callee" in err and "SIGTRAP" in err
    warnings = json.loads((tmp_path / "report-emulate.json").read_text())["warnings"]
    assert [w for w in warnings if "SIGTRAP" in w and "trap_callee" in w], warnings
    assert got.returncode in (-5, 128 + 5)  # killed by SIGTRAP, as stepper's own status


@pytest.mark.parametrize("mode", ["emulate", "xol", "boost"])
def test_handler_installed_before_attach_is_read_back(tracee, mode):
    """Attached to a program whose SIGTRAP handler was installed before, and whose SIGTRAP is
    blocked: the first hit resets the handler, which stepper read (injected rt_sigaction) at
    the attach, so it goes back, and the block too."""
    exe = tracee["sigtrap_state"]
    expected = subprocess.run([exe, "attach"], input=b"go\n", capture_output=True, timeout=60)
    p = subprocess.Popen([exe, "attach"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    with ended(p):
        first = b""
        while not first.endswith(b"ready\n"):
            first += p.stdout.readline()
        proc = api.attach(p.pid, mode=mode)
        bp = proc.break_at(proc.load_bias + symbol(exe, "trap_callee")[0])
        p.stdin.write(b"go\n")
        p.stdin.close()
        status = proc.run()
        rest = p.stdout.read()
        p.wait(timeout=60)
    assert first + rest == expected.stdout
    assert status.exit_code == expected.returncode == 1  # one SIGTRAP handled
    assert bp.stats.hits == 3  # main's call, blocked; then main's and the handler's


@pytest.mark.xfail(strict=True, reason="out of reach (docs/under_fire.md): SIGTRAP blocked "
                   "with sigprocmask while SIG_DFL is unblocked by the INT3's forced trap, "
                   "which leaves no trace of the block")
def test_blocked_while_default_is_out_of_reach(tracee, tmp_path):
    argv = [tracee["sigtrap_state"], "blocked_default"]
    got, _ = probe(tmp_path, "emulate", STATE_PROBES, argv)
    assert got.stdout == run_plain(argv).stdout


@pytest.mark.parametrize("mode", MODES)
def test_popf_that_sets_tf_traps_as_unprobed(tracee, tmp_path, mode):
    """popf sets TF: the first trap follows the next instruction. Boosted, the slot's jump back
    would be that instruction (one SIGTRAP too many): popf is never boosted."""
    argv = [tracee["popf_tf"]]
    expected = run_plain(argv)
    got, hits = probe(tmp_path, mode, ["popf_tf:tf_on"], argv)
    assert got.stdout == expected.stdout, got.stderr.decode()
    assert got.returncode == expected.returncode
    assert hits["popf_tf:tf_on"] == 3


@pytest.mark.parametrize("mode", MODES)
def test_every_instruction_of_a_tf_programs_sigtrap_handler(tracee, spawn_captured, mode):
    """The program single-steps itself (TF set by popf) and its SIGTRAP handler, probed at
    every instruction (and main too), runs with SIGTRAP blocked: each hit there is reset by
    the kernel and put back, each of its own traps reaches its handler, and it lands where
    unprobed. The handler is first learned from a TF trap stepper itself delivers after a
    probed instruction."""
    exe = tracee["popf_tf"]
    expected = run_plain([exe])
    proc, out = spawn_captured([exe], mode)
    bps = []
    entry = proc.load_bias + symbol(exe, "on_trap")[0]
    for insn in instructions(exe, "on_trap") + instructions(exe, "main"):
        try:
            bps.append(proc.break_at(proc.load_bias + insn.address))
        except StepperError:
            pass  # e.g. an instruction --mode emulate does not run
    status = proc.run()
    assert out.read_bytes() == expected.stdout
    assert status.exit_code == expected.returncode
    assert [bp.stats.hits for bp in bps if bp.address == entry] == [9]  # one per trap
