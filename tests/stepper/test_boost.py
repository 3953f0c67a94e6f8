"""Boosted out-of-line steps on real tracees: one trap per hit, transparent at every stop.

The tracees check what the program itself can see: the RIP a signal handler finds in its
ucontext is never inside the XOL area (boost_storm.c checks it against /proc/self/maps), a
fault in a boosted instruction shows the original RIP and si_addr (faults.c), a handler that
re-enters the probed functions works, and a detach in the middle leaves no thread in a slot.
"""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from tests.support.elf import instructions, symbol
from tests.support.programs import PROGRAMS
from tests.support.runs import ended, run_cli, run_plain

PROGRAMS.setdefault("boost_storm", (["boost_storm.c", "boostops.S"], ["-O1", "-pthread"]))
STORM_SITES = ("boost_movs_site", "boost_sse_site", "boost_xadd_site")
SSE_SUM = 0x1111 + 0x2222  # what boost_sse returns


def _storm_signals(stderr: bytes) -> int:
    return int(re.search(rb"signals=(\d+)", stderr).group(1))


@pytest.mark.parametrize("reenter", [False, True], ids=["plain", "reentering-handler"])
def test_signal_storm_four_threads_in_boosted_probes(build, tmp_path, reenter):
    """SIGALRM every 50 us while 4 threads run through three boosted probes: the program's
    output is unchanged and no handler ever saw a RIP in the XOL area (nor anywhere
    unmapped). With `reenter` the handler calls the probed functions itself."""
    exe = build("boost_storm")
    argv = [exe, "30"] + (["reenter"] if reenter else [])
    plain = run_plain(argv)
    assert plain.stdout == (f"total={4 * 30 * SSE_SUM} counter=120 reentered=ok bad=0\n"
                            .encode())
    probed = run_cli(argv, [symbol(exe, s)[0] for s in STORM_SITES], "boost", tmp_path)
    assert (probed.stdout, probed.returncode) == (plain.stdout, plain.returncode)
    assert b"anonymous executable" not in probed.stderr and b"no mapping" not in probed.stderr
    assert _storm_signals(probed.stderr) > 0
    report = probed.report
    assert [p["strategy"] for p in report["probes"]] == ["boost"] * 3
    assert report["steps"]["boost"] >= sum(p["hits"] for p in report["probes"])
    assert report["steps"]["xol"] == 0
    hits = {p["symbol"]: p["hits"] for p in report["probes"]}
    assert hits["boost_xadd_site"] == 120  # called from the workers only, never re-entered
    if reenter:
        assert hits["boost_movs_site"] > 120  # the handler called it too


def test_boosted_faults_show_the_original_rip_and_si_addr(build, spawn_captured):
    """A boosted store to a PROT_NONE page (SIGSEGV), a RIP-relative load from one, and a
    `div` by zero (SIGFPE, whose si_addr is the instruction): faults.c's handler checks the
    ucontext RIP and si_addr, and prints WRONG otherwise."""
    exe = build("faults")
    plain = run_plain([exe])
    proc, out = spawn_captured([exe], "boost")
    bps = [proc.break_at(proc.load_bias + symbol(exe, s)[0])
           for s in ("fault_store_site", "fault_load_rip_site", "div_site")]
    status = proc.run()
    assert out.read_bytes() == plain.stdout and status.exit_code == plain.returncode
    assert b"WRONG" not in plain.stdout and plain.stdout.count(b"rip ok, si_addr ok") == 9
    for bp in bps:
        assert bp.strategy == "boost"
        assert bp.stats.hits == 3 + (3 if bp.insn.mnemonic == "div" else 0)
        assert bp.stats.xol == 0 and bp.stats.boost >= bp.stats.hits


def test_every_instruction_of_c_functions_in_boost_mode(build, tmp_path):
    """The shape test of test_shapes.py under --mode boost: every instruction of the C
    probe functions, boosted where it may be and plain XOL (or emulated) where not."""
    from tests.support.programs import every_probe_instruction as _every_instruction

    exe = build("probes")
    insns = _every_instruction(exe)
    plain = run_plain([exe, "60"])
    probed = run_cli([exe, "60"], [i.address for i in insns], "boost", tmp_path)
    assert probed.stderr == b""
    assert (probed.stdout, probed.returncode) == (plain.stdout, plain.returncode)
    report = probed.report
    hits = {p["spec"]: p["hits"] for p in report["probes"]}
    assert hits[hex(symbol(exe, "probe_loads")[0])] == 60
    assert sum(hits.values()) == sum(report["steps"].values()) - report["steps"]["fallback"]
    strategies = {p["instruction"]: p["strategy"] for p in report["probes"]}
    assert strategies["push rbp"] == "boost"
    assert all(s == "xol" for t, s in strategies.items() if t.startswith("call"))
    assert any(p["strategy"] == "boost" and "rip" in p["instruction"]
               for p in report["probes"])
    assert all(p["boost"].startswith("not boosted: call") for p in report["probes"]
               if p["instruction"].startswith("call"))


def test_hand_written_sites_in_boost_mode(build, tmp_path):
    """syscall is not boosted (the kernel writes the slot address into RCX); SSE/AVX loads
    and stores, lock ops and rep string ops are."""
    from tests.support.programs import ASM_SITES

    exe = build("asmmain")
    plain = run_plain([exe])
    probed = run_cli([exe], [symbol(exe, s)[0] for s in ASM_SITES], "boost", tmp_path)
    assert probed.stderr == b""
    assert (probed.stdout, probed.returncode) == (plain.stdout, plain.returncode)
    strategies = {p["instruction"].split()[0]: p for p in probed.report["probes"]}
    assert strategies["syscall"]["strategy"] == "xol"
    assert "RCX" in strategies["syscall"]["boost"]
    for mnemonic in ("movdqu", "lock", "rep"):
        assert strategies[mnemonic]["strategy"] == "boost", strategies[mnemonic]
    assert all(p["hits"] == 20 for p in probed.report["probes"])


def test_auto_boosts_only_what_it_does_not_emulate(build, spawn_captured):
    exe = build("asmmain")
    plain = run_plain([exe])
    proc, out = spawn_captured([exe], "auto")
    avx = proc.break_at(proc.load_bias + symbol(exe, "avx_load_site")[0])  # AVX: declined
    push = proc.break_at(proc.load_bias + instructions(exe, "main")[0].address)
    status = proc.run()
    assert out.read_bytes() == plain.stdout and status.exit_code == plain.returncode
    assert (avx.strategy, push.strategy) == ("boost", "emulate")
    assert avx.stats.boost == avx.stats.hits and avx.stats.xol == 0


def test_attach_probe_detach_while_threads_are_in_boosted_probes(build):
    """A running program (not started by stepper) under a signal storm: attach, probe the
    three sites, detach from a callback after some hits. The program finishes on its own
    with the right results and no handler ever saw a RIP in the (now unmapped) area."""
    from stepper import api

    exe = build("boost_storm")
    n = 10_000_000  # about 1.4 s unprobed: the storm (which ends with the first worker) and
    # all four workers are still there when stepper attaches
    prog = subprocess.Popen([exe, str(n)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with ended(prog):
        time.sleep(0.2)  # let the threads get busy (not a timing assertion)
        proc = api.attach(prog.pid, "boost")  # auto would emulate the SSE load
        seen = []

        def count(hit):
            seen.append(hit.tid)
            if len(seen) == 300:
                proc.detach()

        bps = [proc.break_at(symbol_address(prog.pid, exe, s), callback=count)
               for s in STORM_SITES]
        status = proc.run()
        assert status.detached
        assert all(bp.strategy == "boost" for bp in bps)
        assert sum(bp.stats.boost for bp in bps) >= 300
        out, err = prog.communicate(timeout=120)
    assert prog.returncode == 0, err
    assert out == f"total={4 * n * SSE_SUM} counter={4 * n} reentered=ok bad=0\n".encode()


def symbol_address(pid: int, exe: str, name: str) -> int:
    """Run-time address of `name` in process `pid` (PIE: add the load bias from maps)."""
    with open(f"/proc/{pid}/maps") as f:
        base = next(int(line.split("-")[0], 16) for line in f if line.rstrip().endswith(exe))
    return base + symbol(exe, name)[0]
