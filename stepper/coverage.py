"""Coverage of a corpus: how the engine would step each harvested site (stepper.corpus
harvests them), weighted by how often it occurs, as the tables of `stepper corpus coverage`.

The verdict of a site is stepper.policy's, the rule that chooses the engine's strategy under
`auto`, so the report cannot drift from the behaviour.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from .corpus import KINDS
from .policy import VERDICTS, verdict


def classify(code: bytes, address: int) -> tuple[str, str]:
    """(verdict, mnemonic) of the instruction `code` at `address`.

    The verdict is stepper.policy's, the function that chooses the engine's strategy under
    `auto`, so the report cannot drift from the behaviour: `emulate` when the emulator runs it
    on a live thread, else `xol` when it runs out of line, else `refused`. Bytes that do not
    decode are `refused`.
    """
    import emu

    try:
        insn = emu.decode(code, address)
    except emu.DecodeError:
        return "refused", "(invalid)"
    return verdict(insn), insn.mnemonic


@dataclass
class Tally:
    """Occurrence counts of one kind of site by verdict."""

    sites: int = 0
    emulate: int = 0
    xol: int = 0
    refused: int = 0

    def add(self, verdict: str, count: int) -> None:
        self.sites += count
        setattr(self, verdict, getattr(self, verdict) + count)

    def merge(self, other: "Tally") -> None:
        for key in ("sites",) + VERDICTS:
            setattr(self, key, getattr(self, key) + getattr(other, key))

    def share(self, verdict: str) -> float:
        return getattr(self, verdict) / self.sites if self.sites else 0.0

    def as_dict(self) -> dict[str, int]:
        return {"sites": self.sites, "emulate": self.emulate, "xol": self.xol,
                "refused": self.refused}


@dataclass
class Coverage:
    """Coverage of one or more corpora.

    `entry` counts function-entry sites; `all` counts the uniform sample of every
    instruction (an estimate for a probe placed anywhere). `missing` counts, per mnemonic,
    the occurrences of both kinds that are not emulated; `missing_by_kind` splits them.
    """

    entry: Tally = field(default_factory=Tally)
    all: Tally = field(default_factory=Tally)
    missing_by_kind: dict[str, Counter] = field(
        default_factory=lambda: {kind: Counter() for kind in KINDS})

    @property
    def missing(self) -> list[tuple[str, int]]:
        total = self.missing_by_kind["entry"] + self.missing_by_kind["sample"]
        return sorted(total.items(), key=lambda item: (-item[1], item[0]))

    def merge(self, other: "Coverage") -> None:
        self.entry.merge(other.entry)
        self.all.merge(other.all)
        for kind in KINDS:
            self.missing_by_kind[kind].update(other.missing_by_kind[kind])

    def as_json(self) -> dict:
        return {"entry": self.entry.as_dict(), "all": self.all.as_dict(),
                "missing": [[mnemonic, count] for mnemonic, count in self.missing]}


def coverage(rows: Iterable[dict]) -> Coverage:
    """Classify every row (decoded at its first example's address) weighted by count."""
    result = Coverage()
    cache: dict[tuple[bytes, int], tuple[str, str]] = {}
    for row in rows:
        code = row.get("code") or bytes.fromhex(row["bytes"])
        key = (code, row["examples"][0]["address"])
        if key not in cache:
            cache[key] = classify(*key)
        verdict, mnemonic = cache[key]
        tally = result.entry if row["kind"] == "entry" else result.all
        tally.add(verdict, row["count"])
        if verdict != "emulate":
            result.missing_by_kind[row["kind"]][mnemonic] += row["count"]
    return result


def _cell(tally: Tally, verdict: str) -> str:
    if not tally.sites:
        return "-"
    return f"{100 * tally.share(verdict):.1f}% ({getattr(tally, verdict)})"


def format_table(results: list[tuple[str, Coverage]], total: Coverage | None = None,
                 top: int = 15) -> str:
    """A Markdown table of the shares per input (and the total), then the top missing
    mnemonics, ready to paste into a README."""
    lines = ["| input | kind | sites | emulate | xol | refused |",
             "|---|---|---:|---:|---:|---:|"]
    labelled = list(results) + ([("**total**", total)] if total is not None else [])
    for label, result in labelled:
        for kind, tally in (("entry", result.entry), ("all (sample)", result.all)):
            lines.append(f"| {label} | {kind} | {tally.sites} | "
                         + " | ".join(_cell(tally, v) for v in VERDICTS) + " |")
    overall = total if total is not None else results[0][1]
    missing = overall.missing[:top]
    lines += ["", f"Top missing mnemonics (not emulated, by occurrence; {len(overall.missing)} "
              "in all):", "", "| mnemonic | entry | sample | total |", "|---|---:|---:|---:|"]
    for mnemonic, count in missing:
        lines.append(f"| {mnemonic} | {overall.missing_by_kind['entry'][mnemonic]} | "
                     f"{overall.missing_by_kind['sample'][mnemonic]} | {count} |")
    if not missing:
        lines.append("| (none) | 0 | 0 | 0 |")
    return "\n".join(lines)
