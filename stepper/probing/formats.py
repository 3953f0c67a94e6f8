"""The trace stream of `stepper probe --trace`: one line per event, never on the program's
stdout (stderr, or `-o FILE` opened before the program starts), in one of three formats
(docs/trace.md, docs/schema.md):

- text, like `perf script`: `TIME TID PROBE: name=value ... [retval=V duration_ns=N]`
  (TIME in seconds of CLOCK_MONOTONIC), with --stack one more line per frame, a tab first;
- jsonl: one JSON object per event with the keys time_ns, pid, tid, probe, symbol, address,
  event, args (and retval, duration_ns on returns; stack with --stack);
- chrome: the Trace Event Format (Perfetto, chrome://tracing): one complete event ("ph": "X")
  per call, a return event spanning the call, an entry event of zero duration; thread and
  process names as metadata events.

Output is buffered and flushed at least every FLUSH_NS, so a live trace stays live while a
busy probe does not pay one write per hit.
"""

from __future__ import annotations

import json
import os
import time
from typing import IO

from ..fetchargs import format_json, json_formatter, text_formatter
from .events import Event

__all__ = ["FORMATS", "Sink", "make_writer"]

FORMATS = ("text", "jsonl", "chrome")
FLUSH_NS = 200_000_000
BUFFER = 1 << 16


class Sink:
    """Buffered text output with a time bound on how stale it gets."""

    def __init__(self, stream: IO[str], owned: bool) -> None:
        self.stream = stream
        self.owned = owned
        self._parts: list[str] = []
        self._size = 0
        self._last = time.monotonic_ns()

    @classmethod
    def open(cls, path: str | None) -> "Sink":
        """stderr (a descriptor of its own, so stepper's other messages stay ordered by
        flushes), or FILE, created now."""
        if path is None:
            return cls(os.fdopen(os.dup(2), "w", buffering=BUFFER, encoding="utf-8",
                                 errors="backslashreplace"), owned=True)
        return cls(open(path, "w", buffering=BUFFER, encoding="utf-8"), owned=True)

    def write(self, text: str, now: int | None = None) -> None:
        """Buffer `text`; `now` (CLOCK_MONOTONIC ns, read when not given: an event's own
        time saves the clock read) decides whether the time bound has passed."""
        self._parts.append(text)
        self._size += len(text)
        if now is None:
            now = time.monotonic_ns()
        if self._size >= BUFFER or now - self._last >= FLUSH_NS:
            self.flush(now)

    def flush(self, now: int | None = None) -> None:
        if self._parts:
            try:
                self.stream.write("".join(self._parts))
                self.stream.flush()
            except OSError:
                pass   # a closed terminal or a full disk must not stop the program
            self._parts.clear()
            self._size = 0
        self._last = now or time.monotonic_ns()

    def close(self) -> None:
        self.flush()
        if self.owned:
            try:
                self.stream.close()
            except OSError:
                pass


class TextWriter:
    """`TIME TID PROBE: name=value ...`; each probe's line is prepared once (its label and
    names, a formatter per argument type: stepper.fetchargs.text_formatter), so a line costs
    one call per value and one f-string."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self._prepared: dict[object, tuple] = {}   # TraceProbe -> (head, names, formats)

    def _prepare(self, probe) -> tuple:
        prepared = self._prepared[probe] = (
            f" {probe.label}:", tuple(f" {a.name}=" for a in probe.args),
            tuple(text_formatter(a) for a in probe.args))
        return prepared

    def write(self, e: Event) -> None:
        probe = e.probe
        head, names, formats = self._prepared.get(probe) or self._prepare(probe)
        t = e.time_ns
        fields = "".join([n + f(v) for n, f, v in zip(names, formats, e.values)])
        if e.event == "return":
            fields += (f" retval={'(fault)' if e.retval is None else hex(e.retval)}"
                       f" duration_ns={e.duration_ns}")
        text = f"{t // 1_000_000_000}.{t % 1_000_000_000 // 1000:06d} {e.tid}{head}{fields}\n"
        if e.stack is not None:
            text += "".join(f"\t{frame}\n" for frame in e.stack)
        self.sink.write(text, t)

    def close(self) -> None:
        self.sink.close()


def event_json(e: Event) -> dict:
    """The jsonl object of one event (docs/schema.md)."""
    data = {"time_ns": e.time_ns, "pid": e.pid, "tid": e.tid, "probe": e.probe.label,
            "symbol": e.symbol, "address": hex(e.address), "event": e.event,
            "args": {a.name: format_json(a, v) for a, v in zip(e.probe.args, e.values)}}
    if e.event == "return":
        data["retval"] = None if e.retval is None else hex(e.retval)
        data["duration_ns"] = e.duration_ns
    if e.stack is not None:
        data["stack"] = [str(frame) for frame in e.stack]
    return data


class JsonlWriter(TextWriter):
    """One JSON object per line. An entry event without a stack (the common line) is put
    together from its parts: what is the same for every event of one probe at one site is
    encoded once, each value by a formatter of its type (stepper.fetchargs.json_formatter);
    the text is what `json.dumps(event_json(e), separators=(",", ":"))` gives, which every
    other event still goes through (tests/stepper/test_probe_events.py compares them)."""

    def _prepare(self, key) -> tuple:
        probe, symbol, address = key
        middle = (f',"probe":{json.dumps(probe.label)},"symbol":{json.dumps(symbol)},'
                  f'"address":"{hex(address)}","event":"entry","args":{{')
        prepared = self._prepared[key] = (
            middle, tuple(json.dumps(a.name) + ":" for a in probe.args),
            tuple(json_formatter(a) for a in probe.args))
        return prepared

    def write(self, e: Event) -> None:
        if e.event != "entry" or e.stack is not None:
            self.sink.write(json.dumps(event_json(e), separators=(",", ":")) + "\n")
            return
        key = (e.probe, e.symbol, e.address)
        middle, names, formats = self._prepared.get(key) or self._prepare(key)
        args = ",".join([n + f(v) for n, f, v in zip(names, formats, e.values)])
        self.sink.write(f'{{"time_ns":{e.time_ns},"pid":{e.pid},"tid":{e.tid}{middle}{args}}}}}\n',
                        e.time_ns)


class ChromeWriter(TextWriter):
    """{"traceEvents": [...], "displayTimeUnit": "ns", "otherData": {...}}, written as it
    goes and closed at the end."""

    def __init__(self, sink: Sink) -> None:
        super().__init__(sink)
        self._named: set[tuple[str, int]] = set()
        self._first = True
        sink.write('{"otherData":{"generator":"stepper","schema":1},"displayTimeUnit":"ns",'
                   '"traceEvents":[\n')

    def _emit(self, obj: dict) -> None:
        self.sink.write(("" if self._first else ",\n") + json.dumps(obj, separators=(",", ":")))
        self._first = False

    def write(self, e: Event) -> None:
        if ("p", e.pid) not in self._named:
            self._named.add(("p", e.pid))
            self._emit({"ph": "M", "name": "process_name", "pid": e.pid, "tid": e.pid,
                        "args": {"name": _comm(e.pid, e.pid) or str(e.pid)}})
        if ("t", e.tid) not in self._named:
            self._named.add(("t", e.tid))
            self._emit({"ph": "M", "name": "thread_name", "pid": e.pid, "tid": e.tid,
                        "args": {"name": e.comm or _comm(e.pid, e.tid) or str(e.tid)}})
        args = {a.name: format_json(a, v) for a, v in zip(e.probe.args, e.values)}
        start, dur = e.time_ns, 0
        if e.event == "return":
            args["retval"] = None if e.retval is None else hex(e.retval)
            start, dur = e.time_ns - e.duration_ns, e.duration_ns
        if e.stack is not None:
            args["stack"] = [str(frame) for frame in e.stack]
        self._emit({"name": e.symbol or e.probe.label, "cat": e.probe.label, "ph": "X",
                    "ts": start / 1000, "dur": dur / 1000, "pid": e.pid, "tid": e.tid,
                    "args": args})

    def close(self) -> None:
        self.sink.write("\n]}\n")
        self.sink.close()


def _comm(pid: int, tid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            return f.read().rstrip("\n")
    except OSError:
        return None


def make_writer(fmt: str, sink: Sink):
    return {"text": TextWriter, "jsonl": JsonlWriter, "chrome": ChromeWriter}[fmt](sink)
