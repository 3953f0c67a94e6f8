"""Threads: every hit counted exactly while 8 threads run a probed function, and probed
`lock` instructions keep exact totals while unprobed copies run natively on other threads."""

from __future__ import annotations

import pytest

from tests.support.elf import symbol
from tests.support.runs import run_cli, run_plain


@pytest.mark.parametrize("mode,program", [("auto", "threads"), ("xol", "threads_nopie"),
                                          ("boost", "threads")])
def test_eight_threads_ten_thousand_calls_each(build, tmp_path, mode, program):
    exe = build(program)
    plain = run_plain([exe, "10000"])
    assert plain.stdout == b"total=1200800000 counter=0\n"
    probed = run_cli([exe, "10000"], [symbol(exe, "work")[0]], mode, tmp_path)
    assert probed.stderr == b""
    assert (probed.stdout, probed.returncode) == (plain.stdout, plain.returncode)
    (probe,) = probed.report["probes"]
    assert probe["hits"] == 80_000 and probe["strategy"] == ("emulate" if mode == "auto" else mode)
    assert probed.report["threads"] == 9


def test_probed_lock_instructions_keep_exact_totals(build, spawn_captured):
    exe = build("threads")
    plain = run_plain([exe, "1500", "lock"])
    assert plain.stdout == b"total=0 counter=48000\n"
    proc, out = spawn_captured([exe, "1500", "lock"], "auto")
    xadd = proc.break_at(proc.load_bias + symbol(exe, "lock_site")[0])
    add = proc.break_at(proc.load_bias + symbol(exe, "lock_add_site")[0])
    status = proc.run()
    assert out.read_bytes() == plain.stdout and status.exit_code == 0
    assert xadd.stats.hits == add.stats.hits == 12_000
    assert xadd.strategy == "boost"  # not emulated at all: boosted out of line
    # `lock add` is emulated only while the program has one thread; here it always had more.
    assert add.strategy == "emulate"
    assert add.stats.emulate == 0 and add.stats.boost == 12_000  # the CPU runs it, boosted
    assert add.stats.fallbacks == {"atomic instruction while other threads run": 12_000}


def test_probed_lock_instructions_in_xol_mode(build, tmp_path):
    exe = build("threads")
    plain = run_plain([exe, "1000", "lock"])
    probed = run_cli([exe, "1000", "lock"],
                     [symbol(exe, "lock_site")[0], symbol(exe, "lock_add_site")[0]], "xol", tmp_path)
    assert (probed.stdout, probed.returncode) == (plain.stdout, plain.returncode)
    assert [p["hits"] for p in probed.report["probes"]] == [8000, 8000]
