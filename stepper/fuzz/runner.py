"""A fuzz campaign: cut the case indices into chunks, run the chunks on local processes or on a
cluster, gather the counts and divergences, shrink the divergences and write them as
regression files.

Why chunks of indices rather than cases: a case is a pure function of (seed, index)
(stepper/fuzz/cases.py), so a worker only needs the index range; local processes and cluster
workers run the very same `run_chunk`, and the gathered counts of a seeded run are the same
whatever ran them.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Iterator

from emu.testing.generate import Case

from ..errors import StepperError
from . import cases as case_source
from .judge import SKIPPED
from . import cluster as dask_cluster
from . import judge, regressions, shrink

ORACLES = ("unicorn", "native")
CHUNK = 512  # a multiple of cases.VARIANTS, so a template is drawn in one chunk only


class FuzzError(StepperError):
    """Bad fuzz options."""


@dataclass(frozen=True)
class Chunk:
    """The work unit: cases [start, start + count) of a seeded run (picklable, tiny)."""

    seed: int
    start: int
    count: int
    oracles: tuple[str, ...]
    corpus: str | None = None


@dataclass
class ChunkResult:
    cases: int = 0
    unsupported: int = 0
    skipped: int = 0
    quirks: int = 0
    divergent: int = 0
    by_oracle: dict[str, int] = field(default_factory=dict)
    #: (oracle, mnemonic, signature) -> [count, first index, first problems]
    kinds: dict[tuple, list] = field(default_factory=dict)

    @property
    def divergences(self) -> list[tuple[int, str, list[str]]]:
        """The first divergence of each kind, in case order."""
        return sorted((first, key[0], problems) for key, (_, first, problems) in self.kinds.items())

    def add(self, index: int, oracle: str, mnemonic: str, problems: list[str]) -> None:
        key = (oracle, mnemonic, shrink.signature(problems))
        entry = self.kinds.get(key)
        if entry is None:
            self.kinds[key] = [1, index, problems]
        else:
            entry[0] += 1
            if index < entry[1]:
                entry[1:] = [index, problems]

    def merge(self, other: "ChunkResult") -> None:
        self.cases += other.cases
        self.unsupported += other.unsupported
        self.skipped += other.skipped
        self.quirks += other.quirks
        self.divergent += other.divergent
        for name, n in other.by_oracle.items():
            self.by_oracle[name] = self.by_oracle.get(name, 0) + n
        for key, (count, first, problems) in other.kinds.items():
            entry = self.kinds.setdefault(key, [0, first, problems])
            entry[0] += count
            if first < entry[1]:
                entry[1:] = [first, problems]


# ---------------------------------------------------------------- one process's work

_oracles: dict[str, object] = {}
_encodings: dict[str, list[bytes]] = {}


def oracle(name: str):
    """This process's oracle instance of `name` (the native one owns a sandbox process)."""
    if name not in _oracles:
        if name == "unicorn":
            _oracles[name] = judge.UnicornOracle()
        elif name == "native":
            from .native import NativeOracle
            _oracles[name] = NativeOracle()
        else:
            raise FuzzError(f"unknown oracle {name!r}: use unicorn, native or both")
    return _oracles[name]


def close_oracles() -> None:
    for o in _oracles.values():
        o.close()
    _oracles.clear()


def case_at(seed: int, index: int, corpus: str | None, oracles: tuple[str, ...] = ()) -> Case:
    """Case `index` of a run (the same on every process and machine). With the native oracle
    the initial rflags lose NT and ID, which PTRACE_SETREGS cannot set (see native.loadable)."""
    if corpus is None:
        case = case_source.generated(seed, index)
    else:
        if corpus not in _encodings:
            _encodings[corpus] = case_source.corpus_encodings(corpus)
        case = case_source.from_corpus(_encodings[corpus], seed, index)
    if "native" in oracles:
        from .native import loadable
        case = loadable(case)
    return case


def check(case: Case, name: str) -> tuple[list[str] | None, object]:
    """(problems, oracle outcome) of `case` against oracle `name`; problems None when the case
    does not count (the emulator refuses it, or it collides with the native sandbox)."""
    result = judge.run_emu(case, live=name == "native")
    if result.unsupported is not None:
        return None, None
    out = oracle(name).run(judge.state_of(case))
    if out.error in SKIPPED or (name == "unicorn" and judge.unicorn_quirk(case, result.outcome, out)):
        return None, out
    return judge.compare(case, result.outcome, out, name), out


def run_chunk(chunk: Chunk) -> ChunkResult:
    """Run one chunk of cases against its oracles (on whichever process or worker runs it)."""
    result = ChunkResult(by_oracle={name: 0 for name in chunk.oracles})
    for index in range(chunk.start, chunk.start + chunk.count):
        case = case_at(chunk.seed, index, chunk.corpus, chunk.oracles)
        result.cases += 1
        if not judge.instruction(case.code, case.address).emulatable:
            result.unsupported += 1
            continue
        state = judge.state_of(case)
        outs = [(name, oracle(name).run(state)) for name in chunk.oracles]  # state untouched
        # As live threads run it when the real CPU judges (every flag compared); against
        # Unicorn alone the undefined flags are masked, so the pure emulator is judged.
        emu_out = judge.run_emu(case, state, live="native" in chunk.oracles).outcome
        diverged = False
        for name, out in outs:
            if out.error in SKIPPED:
                result.skipped += 1
                continue
            if name == "unicorn" and judge.unicorn_quirk(case, emu_out, out):
                result.quirks += 1
                continue
            problems = judge.compare(case, emu_out, out, name)
            if problems:
                diverged = True
                result.by_oracle[name] += 1
                result.add(index, name, case.text.split(" ")[0], problems)
        result.divergent += diverged
    return result


# ---------------------------------------------------------------- a campaign


@dataclass
class Config:
    cases: int = 10_000
    seed: int = 0
    oracle: str = "unicorn"
    corpus: str | None = None
    workers: int = 0  # 0: every core
    cluster: str | None = None
    trust: dask_cluster.Trust = field(default_factory=dask_cluster.Trust)  # of the cluster
    regressions_dir: Path | None = regressions.DEFAULT_DIR
    max_regressions: int = 10
    progress: bool = False

    def oracles(self) -> tuple[str, ...]:
        if self.oracle == "both":
            return ORACLES
        if self.oracle not in ORACLES:
            raise FuzzError(f"unknown oracle {self.oracle!r}: use unicorn, native or both")
        return (self.oracle,)

    def chunks(self) -> list[Chunk]:
        oracles = self.oracles()
        corpus = str(self.corpus) if self.corpus else None
        return [Chunk(self.seed, start, min(CHUNK, self.cases - start), oracles, corpus)
                for start in range(0, self.cases, CHUNK)]


@dataclass
class Report:
    cases: int
    divergences: int
    unsupported: int
    oracle: str
    seed: int
    cases_per_s: float
    skipped: int
    unicorn_quirks: int
    by_oracle: dict[str, int]
    seconds: float
    workers: int | str
    source: str
    regressions: list[str]
    examples: list[dict]
    kinds: list[dict]

    def as_json(self) -> dict:
        return asdict(self)


def validate(config: Config) -> None:
    """Check the options before any work starts (bad input changes nothing)."""
    if config.cases < 1:
        raise FuzzError(f"--cases must be at least 1, not {config.cases}")
    if config.workers < 0:
        raise FuzzError(f"--workers must be 0 (every core) or more, not {config.workers}")
    if config.seed < 0:
        raise FuzzError(f"--seed must be a non-negative integer, not {config.seed}")
    config.oracles()
    if config.corpus is not None:
        if not Path(config.corpus).is_file():
            raise FuzzError(f"--from-corpus {config.corpus}: no such file")
        case_source.corpus_encodings(config.corpus)
    if "native" in config.oracles() and sys.platform != "linux":
        raise FuzzError("the native oracle needs Linux x86-64")
    dask_cluster.check(config.cluster, config.trust)


def run(config: Config) -> Report:
    """Run a campaign and return its report (regression files written as a side effect)."""
    validate(config)
    chunks = config.chunks()
    total = ChunkResult(by_oracle={name: 0 for name in config.oracles()})
    started = time.perf_counter()
    bar = _Progress(config.cases) if config.progress else None
    if config.cluster:
        stream = dask_cluster.run_chunks(config.cluster, chunks, run_chunk, config.trust)
        workers = f"cluster {config.cluster}"
    else:
        workers = config.workers or os.cpu_count() or 1
        stream = _local(chunks, workers)
    for result in stream:
        total.merge(result)
        if bar:
            bar.update(total)
    seconds = time.perf_counter() - started
    if bar:
        bar.close()
    written = _write_regressions(config, total.divergences)
    source = str(config.corpus) if config.corpus else "generator"
    return Report(cases=total.cases, divergences=total.divergent, unsupported=total.unsupported,
                  oracle=config.oracle, seed=config.seed,
                  cases_per_s=round(total.cases / seconds, 1) if seconds else 0.0,
                  skipped=total.skipped, unicorn_quirks=total.quirks, by_oracle=total.by_oracle, seconds=round(seconds, 2),
                  workers=workers, source=source, regressions=[str(p) for p in written],
                  examples=[{"index": i, "oracle": o, "problems": p}
                            for i, o, p in total.divergences[:10]],
                  kinds=[{"oracle": k[0], "mnemonic": k[1], "signature": list(k[2]), "count": v[0],
                          "first_index": v[1]} for k, v in sorted(total.kinds.items(),
                                                                  key=lambda kv: -kv[1][0])])


def _local(chunks: list[Chunk], workers: int) -> Iterator[ChunkResult]:
    if workers == 1 or len(chunks) == 1:
        for chunk in chunks:
            yield run_chunk(chunk)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork"),
                             initializer=_worker_init) as pool:
        yield from pool.map(run_chunk, chunks)


def _worker_init() -> None:
    """A forked worker must not share the parent's oracles (the native one is a process)."""
    _oracles.clear()


def _write_regressions(config: Config, divergences: list[tuple[int, str, list[str]]]) -> list[Path]:
    """Shrink the first divergence of each kind and write it (at most max_regressions)."""
    if config.regressions_dir is None:
        return []
    written, seen = [], set()
    for index, name, problems in divergences:
        if len(written) >= config.max_regressions:
            break
        case = case_at(config.seed, index, str(config.corpus) if config.corpus else None,
                       config.oracles())
        kind = (name, case.text.split(" ")[0], shrink.signature(problems))
        if kind in seen:
            continue
        seen.add(kind)
        small = shrink_case(case, name, problems)
        found, out = check(small, name)
        if not found:
            small = case
            found, out = check(case, name)
        if not found:
            continue  # it did not diverge again (should not happen: every step is deterministic)
        written.append(regressions.save(Path(config.regressions_dir), small, name, found, out,
                                        {"seed": config.seed, "index": index,
                                         "source": str(config.corpus or "generator")}))
    return written


def shrink_case(case: Case, name: str, problems: list[str]) -> Case:
    """`case` shrunk while it diverges against oracle `name` in the same way."""
    want = shrink.signature(problems)

    def still_fails(candidate: Case) -> bool:
        try:
            found, _ = check(candidate, name)
        except (ValueError, StepperError):
            return False
        return bool(found) and shrink.signature(found) == want
    return shrink.shrink(case, still_fails)


class _Progress:
    """A one-line progress bar on stderr (only used when stderr is a terminal)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.started = time.perf_counter()

    def update(self, done: ChunkResult) -> None:
        width = 30
        filled = width * done.cases // self.total
        rate = done.cases / max(time.perf_counter() - self.started, 1e-9)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done.cases}/{self.total} "
                         f"cases, {rate:,.0f}/s, {done.divergent} divergences ")
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()
