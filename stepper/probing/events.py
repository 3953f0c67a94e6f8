"""One traced event (an entry hit, or a function's return) and the probe it belongs to: the
record the writers (stepper.probing.formats) and the summaries (stepper.probing.aggregate)
read. Values are kept raw (ints, strings, None for a fault) and formatted only when written.

A return event carries the arguments fetched at the function's entry, `retval` and
`duration_ns`; the engine's return breakpoints create it (`TraceProbe.returned`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..fetchargs import FetchArg, ProbeLine

__all__ = ["TraceProbe", "Event"]


@dataclass(eq=False)
class TraceProbe:
    """One `-p` with something to do per hit; `label` is its spec as written (with
    `%return` for a return probe)."""

    line: ProbeLine
    index: int
    hits: int = 0          # events that passed the filter
    done: bool = False     # --max-hits reached: removed

    @property
    def label(self) -> str:
        return self.line.spec + ("%return" if self.line.is_return else "")

    @property
    def args(self) -> tuple[FetchArg, ...]:
        return self.line.args


class Event:
    """An entry (`event` "entry") or a return ("return", with retval and duration_ns)."""

    __slots__ = ("time_ns", "pid", "tid", "probe", "symbol", "address", "event", "values",
                 "retval", "duration_ns", "comm", "stack")

    def __init__(self, time_ns: int, pid: int, tid: int, probe: TraceProbe, symbol: str | None,
                 address: int, values: tuple, event: str = "entry", retval: int | None = None,
                 duration_ns: int | None = None, comm: str | None = None,
                 stack: tuple | None = None) -> None:
        self.time_ns = time_ns
        self.pid = pid
        self.tid = tid
        self.probe = probe
        self.symbol = symbol
        self.address = address
        self.event = event
        self.values = values
        self.retval = retval
        self.duration_ns = duration_ns
        self.comm = comm
        #: --stack: the user stack at the entry (stepper.stacks.StackFrame, innermost first)
        self.stack = stack

    def value_of(self, name: str) -> object:
        """A fetch argument's value by name, or retval / duration_ns (None if absent)."""
        if name == "retval":
            return self.retval
        if name == "duration_ns":
            return self.duration_ns
        for arg, value in zip(self.probe.args, self.values):
            if arg.name == name:
                return value
        return None

    def returned(self, time_ns: int, retval: int, values: tuple | None = None) -> "Event":
        """The return event of this entry: the entry's arguments (or `values`: those with
        `$retval` fetched now), the value, the duration."""
        return Event(time_ns, self.pid, self.tid, self.probe, self.symbol, self.address,
                     self.values if values is None else values, "return", retval,
                     time_ns - self.time_ns, self.comm, self.stack)
