"""`stepper demo` (what `make demo` runs): builds the bundled program into the cache and probes
every one of its functions; the program's output is untouched and the counts are demo.c's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest


def test_demo_probes_every_function_of_the_bundled_program(tmp_path):
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the demo")
    env = dict(os.environ, STEPPER_CACHE=str(tmp_path / "cache"))   # a fresh clone's state
    report = tmp_path / "demo.json"
    run = subprocess.run([sys.executable, "-m", "stepper.cli", "demo", "--json", str(report)],
                         capture_output=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr.decode()
    command = run.stderr.decode().splitlines()[0]
    assert command.startswith("$ stepper probe ")
    exe = command.split(" -- ")[1]
    assert os.path.basename(exe) == "demo" and exe.startswith(str(tmp_path / "cache"))
    assert run.stdout == subprocess.run([exe], capture_output=True, timeout=60).stdout
    data = json.loads(report.read_text())
    hits = {p["symbol"]: p["hits"] for p in data["probes"]}
    # demo.c: 10 rounds x 4 accounts; withdraw calls fee each time; one checksum per account
    assert {k: v for k, v in hits.items() if k != "compare_balance"} == {
        "fee": 40, "deposit": 40, "withdraw": 40, "checksum": 4, "main": 1}
    assert hits["compare_balance"] >= 3   # qsort of 4 elements compares at least 3 times
    assert {p["object"] for p in data["probes"]} == {"demo"}
    table = run.stderr.decode()
    assert "withdraw" in table and "program exited with 0" in table
