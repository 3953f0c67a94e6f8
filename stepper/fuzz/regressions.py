"""Regression cases: a shrunk divergence as a small JSON file in corpus/regressions/, replayed
by the test suite forever after (tests/emu/test_replay_regressions.py).

The file holds the case (instruction, registers, regions as seeds plus patches, so it stays
small) and the *expected* outcome, the oracle's, as registers and the byte runs that changed,
so a replay needs no oracle; when one is at hand the replay also checks the oracle still says
the same. The format is described in corpus/regressions/README.md.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from emu.testing.generate import Case, RegionSpec
from emu.testing.unicorn_oracle import Outcome

from ..errors import StepperError
from . import judge
from .judge import SKIPPED

FORMAT = 1
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "corpus" / "regressions"


class RegressionError(StepperError):
    """A regression file is not in the expected format."""


@dataclass
class Regression:
    case: Case
    oracle: str
    expected: Outcome
    problems: list[str]
    path: Path | None = None


def case_to_json(case: Case) -> dict:
    return {
        "family": case.family, "text": case.text, "code": case.code.hex(),
        "regs": {name: f"{value:#x}" for name, value in case.regs},
        "regions": [{"name": r.name, "start": f"{r.start:#x}", "size": f"{r.size:#x}",
                     "writable": r.writable, "seed": r.seed,
                     "patches": [[f"{a:#x}", blob.hex()] for a, blob in r.patches]}
                    for r in case.regions],
    }


def case_from_json(data: dict) -> Case:
    regions = tuple(RegionSpec(int(r["start"], 16), int(r["size"], 16), bool(r["writable"]),
                               int(r["seed"]), tuple((int(a, 16), bytes.fromhex(b))
                                                     for a, b in r.get("patches", ())),
                               r.get("name", "")) for r in data["regions"])
    regs = tuple((name, int(value, 16)) for name, value in data["regs"].items())
    return Case(data.get("family", "regression"), data.get("text", ""), bytes.fromhex(data["code"]),
                regs, regions)


def _changes(case: Case, memory: dict[int, bytes]) -> list[list[str]]:
    """The byte runs of `memory` that differ from the case's initial regions."""
    runs = []
    for spec in case.regions:
        old, new = judge.state_of_region(spec), memory.get(spec.start)
        if new is None or new == old:
            continue
        i = 0
        while i < len(new):
            if new[i] != old[i]:
                j = i
                while j < len(new) and new[j] != old[j]:
                    j += 1
                runs.append([f"{spec.start + i:#x}", new[i:j].hex()])
                i = j
            else:
                i += 1
    return runs


def outcome_to_json(case: Case, out: Outcome) -> dict:
    if out.fault is not None:
        return {"fault": out.error or out.fault}
    before = dict(case.regs)
    return {"fault": None, "memory": _changes(case, out.memory),
            "regs": {n: f"{v:#x}" for n, v in out.regs.items() if v != before.get(n, 0)}}


def outcome_from_json(case: Case, data: dict) -> Outcome:
    if data.get("fault"):
        return Outcome(fault=data["fault"], error=data["fault"])
    memory = {}
    for spec in case.regions:
        memory[spec.start] = bytearray(judge.state_of_region(spec))
    for address, blob in data.get("memory", ()):
        address = int(address, 16)
        for start, buf in memory.items():
            if start <= address < start + len(buf):
                raw = bytes.fromhex(blob)
                buf[address - start:address - start + len(raw)] = raw
    regs = {name: 0 for name in judge.ALL_REGISTERS}
    regs.update(case.regs)
    regs.update((n, int(v, 16)) for n, v in data["regs"].items())  # only what changed is stored
    return Outcome(regs=regs, memory={s: bytes(b) for s, b in memory.items()})


def save(directory: Path, case: Case, oracle: str, problems: list[str], expected: Outcome,
         found: dict) -> Path:
    """Write one regression file; its name is stable for the same case and oracle."""
    body = {"format": FORMAT, "oracle": oracle, "problems": problems, "found": found,
            "case": case_to_json(case), "expected": outcome_to_json(case, expected)}
    digest = hashlib.sha1(json.dumps(body["case"], sort_keys=True).encode()).hexdigest()[:10]
    word = re.sub(r"[^a-z0-9]+", "_", case.text.split(" ")[0].lower()) or "insn"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{oracle}-{word}-{digest}.json"
    path.write_text(json.dumps(body, indent=1, sort_keys=True) + "\n")
    return path


def load(path: str | Path) -> Regression:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
        case = case_from_json(data["case"])
        return Regression(case, data["oracle"], outcome_from_json(case, data["expected"]),
                          list(data.get("problems", ())), path)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RegressionError(f"{path}: not a regression case ({e})") from None


def replay(reg: Regression, oracle=None) -> list[str]:
    """Problems replaying `reg`: the emulator against the stored expected outcome, and, given
    a live oracle (judge.UnicornOracle or native.NativeOracle), that oracle against it too."""
    exact = reg.oracle == "native"  # the real CPU's cases: every flag, as live threads run
    emu_out = judge.run_emu(reg.case, live=exact).outcome
    problems = judge.compare(reg.case, emu_out, reg.expected, "expected", exact_flags=exact)
    if oracle is not None:
        live = oracle.run(judge.state_of(reg.case))
        if live.error not in SKIPPED:
            problems += [f"oracle now: {p}" for p in
                         judge.compare(reg.case, _as_emu(live), reg.expected, "expected",
                                       exact_flags=exact)]
    return problems


def _as_emu(out: Outcome) -> Outcome:
    """An oracle outcome in the emulator's seat (a fault then is just 'a fault')."""
    if out.fault is not None:
        return Outcome(fault="read", fault_address=out.fault_address or 0)
    return out
