"""A probed instruction that faults delivers the same signal, with the same si_addr and a
ucontext RIP equal to the original instruction's address (the tracee's own handler checks
both and prints "WRONG" otherwise); probed stack pushes grow the stack as unprobed."""

from __future__ import annotations

import pytest

from tests.support.elf import instructions, symbol
from tests.support.runs import run_cli, run_plain

SITES = ("fault_store_site", "fault_load_rip_site", "div_site")


@pytest.mark.parametrize("mode", ["auto", "emulate", "xol", "boost"])
def test_faulting_sites_report_original_rip_and_address(build, tmp_path, mode):
    exe = build("faults")
    stack = [i.address for i in instructions(exe, "deep")
             if "[rsp]" in i.text or i.mnemonic in ("call", "push")]
    assert len(stack) >= 2  # a store to the new frame and the call's push
    addresses = [symbol(exe, s)[0] for s in SITES] + stack
    if mode == "emulate":  # `div` is not emulated: it cannot be probed in emulate mode
        addresses.remove(symbol(exe, "div_site")[0])
    plain = run_plain([exe])
    assert plain.stdout.count(b"rip ok, si_addr ok") == 9 and b"WRONG" not in plain.stdout
    probed = run_cli([exe], addresses, mode, tmp_path)
    assert probed.stderr == b""
    assert (probed.stdout, probed.returncode) == (plain.stdout, plain.returncode)
    hits = {int(p["spec"], 16): p["hits"] for p in probed.report["probes"]}
    assert hits[symbol(exe, "fault_store_site")[0]] == 3
    assert hits[stack[0]] == 3001


def test_emulated_fault_falls_back_and_is_counted(build, spawn_captured):
    exe = build("faults")
    plain = run_plain([exe])
    proc, out = spawn_captured([exe], "auto")
    store = proc.break_at(proc.load_bias + symbol(exe, "fault_store_site")[0])
    load = proc.break_at(proc.load_bias + symbol(exe, "fault_load_rip_site")[0])
    status = proc.run()
    assert out.read_bytes() == plain.stdout and status.exit_code == plain.returncode
    for bp in (store, load):
        assert bp.strategy == "emulate"
        assert bp.stats.hits == 3 and bp.stats.emulate == 0 and bp.stats.boost == 3
        assert list(bp.stats.fallbacks.values()) == [3]
        assert "memory fault" in next(iter(bp.stats.fallbacks))


def test_stack_growth_by_probed_pushes_and_stores(build, spawn_captured):
    """Writes below the stack's current extent cannot be emulated (process_vm_writev does
    not grow the stack): they fall back to the CPU, which grows it as unprobed."""
    exe = build("faults")
    plain = run_plain([exe])
    proc, out = spawn_captured([exe], "auto")
    bps = [proc.break_at(proc.load_bias + i.address) for i in instructions(exe, "deep")
           if i.mnemonic == "call" or (i.mnemonic == "mov" and i.text.startswith("mov byte ptr [rsp]"))]
    status = proc.run()
    assert out.read_bytes() == plain.stdout and status.exit_code == plain.returncode
    assert len(bps) == 2
    for bp in bps:
        assert bp.stats.hits >= 3000
        # the CPU takes the fall-backs: boosted, or plain XOL for the call (never boosted)
        assert bp.stats.emulate + bp.stats.boost + bp.stats.xol == bp.stats.hits
    # The first write to each new stack page is the one that falls back (the store does it).
    assert bps[0].stats.fallbacks.get("memory fault (write)", 0) > 10
