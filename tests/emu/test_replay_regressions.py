"""Every shrunk divergence `stepper fuzz` ever wrote to corpus/regressions/ is replayed here
forever after: the emulator must produce the stored expected outcome (the oracle's), with
rflags compared except the bits `emu.undefined_flags` leaves undefined. With no regression
files the parametrized test has nothing to replay; the checks below show the replay can fail.
"""

from __future__ import annotations

import json

import pytest

from emu.testing.generate import example_case
from stepper.fuzz import judge, regressions

FILES = sorted(regressions.DEFAULT_DIR.glob("*.json"))


def test_the_regression_directory_is_there_and_documented():
    assert (regressions.DEFAULT_DIR / "README.md").is_file()


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_regression_replays(path):
    reg = regressions.load(path)
    if reg.oracle == "native":
        from stepper.fuzz.native import NativeOracle
        with NativeOracle() as oracle:
            problems = regressions.replay(reg, oracle)
    else:
        problems = regressions.replay(reg, judge.UnicornOracle())
    assert problems == [], f"{path.name}: {reg.problems}"


def _saved(tmp_path, text: str, **regs) -> tuple:
    case = example_case(text, **regs)
    out = judge.UnicornOracle().run(judge.state_of(case))
    path = regressions.save(tmp_path, case, "unicorn", ["(hand-made)"], out, {"test": True})
    return path, json.loads(path.read_text())


def test_replay_passes_on_a_correct_expected_state(tmp_path):
    path, _ = _saved(tmp_path, "add qword ptr [rsp - 8], rax", rax=5)
    assert regressions.replay(regressions.load(path), judge.UnicornOracle()) == []


def test_replay_detects_a_wrong_expected_register(tmp_path):
    path, body = _saved(tmp_path, "add rax, rbx", rax=5, rbx=7)
    assert body["expected"]["regs"]["rax"] == "0xc"
    body["expected"]["regs"]["rax"] = "0xd"
    path.write_text(json.dumps(body))
    problems = regressions.replay(regressions.load(path))
    assert any(p.startswith("rax: emu 0xc expected 0xd") for p in problems)


def test_replay_detects_wrong_expected_memory_and_flags(tmp_path):
    path, body = _saved(tmp_path, "add qword ptr [rsp - 8], rax", rax=5)
    (address, data), = body["expected"]["memory"]
    body["expected"]["memory"] = [[address, "06" + data[2:]]]
    body["expected"]["regs"]["rflags"] = hex(int(body["expected"]["regs"].get("rflags", "0x202"), 16) ^ 1)
    path.write_text(json.dumps(body))
    problems = regressions.replay(regressions.load(path))
    assert any(p.startswith("memory") for p in problems)
    assert any(p.startswith("rflags") for p in problems)


def test_replay_detects_a_missing_fault(tmp_path):
    path, body = _saved(tmp_path, "mov rax, qword ptr [rbx]", rbx=0x10)
    assert body["expected"]["fault"]
    body["expected"] = {"fault": None, "regs": {}, "memory": []}
    path.write_text(json.dumps(body))
    assert regressions.replay(regressions.load(path)) != []


def test_a_malformed_file_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": 1}')
    with pytest.raises(regressions.RegressionError, match="not a regression case"):
        regressions.load(bad)
