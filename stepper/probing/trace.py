"""The per-hit work of `stepper probe` when a probe fetches, filters, traces or aggregates:
the callbacks put on the probes' breakpoints, `--max-hits`, and the live summaries.

Cost first: a hit fetches its registers from the Hit's dict, memory with one read per value
(a string: one read of at most STRING_MAX bytes), formats nothing unless a writer writes, and
the writer buffers (stepper.probing.formats). The thread's pid and name are looked up once
per thread. A counting probe (nothing per hit) gets no callback at all. With --stack, the
user stack is read once per hit that passes a filter (stepper.stacks, shared by the probes of
that breakpoint; a return probe's at its entry) and kept on the event; --folded FILE gets the counted stacks when the run ends.

Return probes: `TraceProbe.line.is_return` probes fetch their arguments at the entry, keep
the entry Event, and the engine's return breakpoint calls `Tracer.returned(entry, retval,
time_ns)` with it (see `Tracer._arm_return`, the one place that needs the engine's
`on_return`).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Callable, Sequence

from ..errors import StepperError
from ..fetchargs import ProbeLine
from ..fetching import Fetcher, HitContext, compile_fetch, compile_raw, pid_of
from .aggregate import Aggregate
from .events import Event, TraceProbe
from .sites import bound_args

__all__ = ["Tracer"]


def _no_memory(address: int, size: int) -> bytes:
    raise OSError("no memory read at a return")


class Tracer:
    """The traced probes of one run: callbacks for their breakpoints, the writer (or None:
    no --trace), the summaries and --max-hits."""

    def __init__(self, lines: Sequence[ProbeLine], writer, hist: Sequence[str],
                 max_hits: int | None, stack: bool = False, folded=None) -> None:
        """`folded`: a stepper.output.Output the folded stacks are written to at close()."""
        self.probes = [TraceProbe(line, i) for i, line in enumerate(lines)]
        self.by_spec: dict[str, list[TraceProbe]] = {}
        for tp in self.probes:
            self.by_spec.setdefault(tp.line.spec, []).append(tp)
        self.writer = writer
        self.aggregate = Aggregate([(tp.label, tp.line.is_return, tp.line.names)
                                    for tp in self.probes], hist, stack)
        self.stack = stack
        self.folded = folded
        self.max_hits = max_hits
        self.ctx = HitContext()
        self.sites: dict[int, list] = {tp.index: [] for tp in self.probes}  # (proc, bp)
        self.lock = threading.Lock()   # the live summaries read while hits add
        #: the processes of the run (stepper.probing.follow's Tracker sets it)
        self.processes: Callable[[], list] = lambda: [proc for proc, _ in
                                                      (s for v in self.sites.values()
                                                       for s in v)]
        for tp in self.probes:
            self.aggregate.summaries[tp.index].shown = self._works(tp)

    def _works(self, tp: TraceProbe) -> bool:
        """Whether a probe does work per hit (else it only counts, as without a Tracer)."""
        return (not tp.line.plain or self.max_hits is not None or self.writer is not None
                or bool(self.aggregate.summaries[tp.index].hists) or self.stack)

    def wants(self, spec: str) -> bool:
        """Whether a breakpoint of `spec` needs a callback (not a plain counting probe)."""
        return any(self._works(tp) for tp in self.by_spec.get(spec, ()))

    def attach(self, proc, row) -> None:
        """Give the breakpoint of a new table row its callback (stepper.probing.insert's
        `on_row`)."""
        probes = [tp for tp in self.by_spec.get(row.spec, ()) if self._works(tp)]
        if not probes:
            return
        for tp in probes:
            self.sites[tp.index].append((proc, row.bp))
        args = bound_args(probes, row)
        observer = self.observer(probes, row.symbol, row.bp.address, args)
        if observer is not None:
            row.bp.observer = observer
            return
        row.bp.callback = self.callback(probes, row.symbol, args)
        if any(tp.line.is_return for tp in probes):
            proc.on_return(row.bp, self._on_return)

    def observer(self, probes: list[TraceProbe], symbol: str | None, address: int,
                 args: list | None = None) -> Callable | None:
        """The hit as a breakpoint observer, `fn(tid, regs_buffer)`: no Hit is made, and
        registers are read from the thread's own buffer (fetching.compile_raw). Only for
        entry probes whose every fetch argument has such a shape and without --stack
        (None otherwise: `callback` then does the work through a Hit)."""
        if self.stack or any(tp.line.is_return for tp in probes):
            return None
        plans = []
        for i, tp in enumerate(probes):
            fetchers = [compile_raw(a) for a in (tp.args if args is None else args[i])]
            if None in fetchers:
                return None
            plans.append((tp, fetchers))
        ctx = self.ctx
        clock = time.monotonic_ns
        emit = self.emit

        def observe(tid: int, buf) -> None:
            now = clock()
            ctx.tid = tid
            ctx.pid = pid = pid_of(tid)
            live = False
            for tp, fetchers in plans:
                if not tp.done:
                    live = True
                    emit(Event(now, pid, tid, tp, symbol, address,
                               tuple([f(buf, ctx) for f in fetchers])))
            if not live:   # a forked child's copy of a retired probe: remove it there too
                self._remove_copy(pid, address)

        return observe

    def callback(self, probes: list[TraceProbe], symbol: str | None,
                 args: list | None = None) -> Callable:
        plans = [(tp, [compile_fetch(a) for a in (tp.args if args is None else args[i])])
                 for i, tp in enumerate(probes)]
        ctx = self.ctx
        clock = time.monotonic_ns
        with_stack = self.stack

        def hit(h) -> None:
            now = clock()
            tid = h.tid
            ctx.tid = tid
            ctx.pid = pid = pid_of(tid)
            ctx.address = h.address
            ctx.retval = None
            regs, read = h.regs, h.read
            live = False
            for tp, fetchers in plans:
                if tp.done:
                    continue
                live = True
                values = tuple([f(regs, read, ctx) for f in fetchers])
                event = Event(now, pid, tid, tp, symbol, h.address, values)
                if tp.line.is_return:
                    if with_stack:       # the return's filter comes later: read it now
                        event.stack = _stack_of(h)
                    self._arm_return(h, event)
                    continue
                self.emit(event, h if with_stack else None)
            if not live:   # a forked child's copy of a retired probe: remove it there too
                self._remove_copy(pid, h.address)

        return hit

    def _remove_copy(self, pid: int, address: int) -> None:
        for proc in list(self.processes()):
            if proc.pid == pid:
                for bp in proc.breakpoints:
                    if bp.address == address:
                        bp.callback = bp.observer = None
                        try:
                            proc.remove(bp)
                        except Exception:  # noqa: BLE001 - gone meanwhile: nothing to remove
                            pass

    def emit(self, event: Event, hit=None) -> None:
        """Filter, count, write and summarise one event (entry, or return); with `hit`
        (--stack), the event's stack is read once it passed the filter."""
        tp = event.probe
        cond = tp.line.filter
        if cond is not None and not cond.matches(self._env(event, cond.names)):
            return
        if hit is not None and event.stack is None:
            event.stack = _stack_of(hit)
        with self.lock:
            tp.hits += 1
            self.aggregate.add(event)
        if self.writer is not None:
            self.writer.write(event)
        if self.max_hits is not None and tp.hits >= self.max_hits:
            self._retire(tp)

    def _env(self, event: Event, names: frozenset[str]) -> dict:
        env = dict(zip(event.probe.line.names, event.values))
        env["pid"], env["tid"] = event.pid, event.tid
        if "comm" in names:
            env["comm"] = self.ctx.comm()
        retval = event.retval
        if retval is not None and retval >> 63:
            retval -= 1 << 64   # signed, as a C caller compares it (-1, < 0)
        env["retval"], env["duration_ns"] = retval, event.duration_ns
        return env

    def returned(self, entry: Event, retval: int, time_ns: int) -> None:
        """The engine's return hook for an entry armed by `_arm_return`."""
        if entry.probe.done:
            return
        ctx = self.ctx
        ctx.retval = retval
        values = tuple(Fetcher(a).value({}, _no_memory, ctx) if a.node == ("retval",) else v
                       for a, v in zip(entry.probe.args, entry.values))
        self.emit(entry.returned(time_ns, retval, values))

    def _arm_return(self, hit, entry: Event) -> None:
        """A return probe's entry: its event waits on the hit for the call's return (the
        engine arms the return breakpoint at every entry hit: `_on_return`)."""
        hit.data.setdefault("trace", []).append(entry)

    def _on_return(self, ret) -> None:
        """The engine's on_return for a breakpoint of return probes (stepper.returns: the
        return matched by thread and stack pointer, the stack never rewritten)."""
        now = time.monotonic_ns()   # the entries' clock: a return is timed where it is seen
        for entry in ret.entry.data.get("trace", ()):
            self.returned(entry, ret.value, now)

    def _retire(self, tp: TraceProbe) -> None:
        """--max-hits reached: remove the probe's breakpoints (the program runs on untraced
        there); a breakpoint another probe still uses stays."""
        tp.done = True
        live = {id(bp) for other in self.probes if not other.done
                for _, bp in self.sites[other.index]}
        for proc, bp in self.sites[tp.index]:
            if id(bp) in live:
                continue
            bp.callback = bp.observer = None
            try:
                proc.remove(bp)
            except Exception:  # noqa: BLE001 - a process gone meanwhile: nothing to remove
                pass

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.folded is not None:
            with self.lock:
                lines = self.aggregate.folded()
            try:
                self.folded.write_text("".join(line + "\n" for line in lines))
            except StepperError as e:   # claimed at the start, yet failed (a full disk)
                print(f"stepper: error: {e}", file=sys.stderr)
            finally:
                self.folded.close()
                self.folded = None


def _stack_of(hit) -> tuple:
    """The hit's stack, read once per hit (the probes of one breakpoint share it); a stack
    that cannot be read at all (the thread's memory gone) is empty rather than an end of
    the run."""
    stack = hit.data.get("stack")
    if stack is None:
        try:
            stack = tuple(hit.stack())
        except StepperError:
            stack = ()
        hit.data["stack"] = stack
    return stack
