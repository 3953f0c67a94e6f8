"""Events, summaries and the three trace formats over hand-made entry and return events
(return events as the engine's return breakpoints will make them)."""

from __future__ import annotations

import io
import json

from hypothesis import given
from hypothesis import strategies as st

from stepper.fetchargs import FetchArg, ProbeLine, parse_probe
from stepper.probing.aggregate import Aggregate, bucket, bucket_range, hist_lines, percentile
from stepper.probing.events import Event, TraceProbe
from stepper.probing.formats import ChromeWriter, JsonlWriter, Sink, TextWriter, event_json


def probes():
    entry = TraceProbe(parse_probe('work a=%di:s64 s=+0(%si):string p=%dx'), 0)
    ret = TraceProbe(parse_probe("libc.so.6:malloc%return size=%di:u64 ptr=$retval"), 1)
    return entry, ret


def events():
    entry, ret = probes()
    out = [Event(1_000_000_000, 10, 11, entry, "work", 0x401000, (-5, 'q"x', None))]
    for i, d in enumerate([100, 200, 300, 400, 5000]):
        start = Event(2_000_000_000 + 10_000 * i, 10, 12, ret, "malloc", 0x7f00, (24 * i, 0))
        out.append(start.returned(start.time_ns + d, 0x5000 + i, (24 * i, 0x5000 + i)))
    return out


def test_return_event_keeps_entry_arguments_and_duration():
    e = events()[2]
    assert (e.event, e.values[0], e.retval, e.duration_ns) == ("return", 24, 0x5001, 200)
    assert e.value_of("size") == 24 and e.value_of("duration_ns") == 200
    assert e.value_of("retval") == 0x5001 and e.value_of("nope") is None


def test_buckets_like_bpftrace():
    assert [bucket(v) for v in (-3, 0, 1, 2, 3, 4, 1023, 1024)] == [-1, 0, 1, 2, 2, 3, 10, 11]
    assert bucket_range(-1) == (None, 0) and bucket_range(0) == (0, 1)
    assert bucket_range(1) == (1, 2) and bucket_range(11) == (1024, 2048)
    lines = hist_lines([[0, 1, 1], [1, 2, 0], [2, 4, 4], [1024, 2048, 2]])
    assert lines[0].startswith("[0]") and lines[2].startswith("[2, 4)")
    assert lines[3].startswith("[1K, 2K)") and lines[2].endswith("@" * 52 + "|")


def test_percentiles_nearest_rank():
    d = list(range(1, 101))
    assert [percentile(d, p) for p in (50, 90, 99, 100)] == [50, 90, 99, 100]
    assert percentile([7], 99) == 7


def test_summary_json_and_text():
    entry, ret = probes()
    agg = Aggregate([(entry.label, False, entry.line.names),
                     (ret.label, True, ret.line.names)], ["duration_ns", "a"])
    for e in events():
        agg.add(e)
    data = agg.as_json()
    assert data[0] == {"probe": "work", "event": "entry", "count": 1,
                       "hist": {"a": [[None, 0, 1]]}}
    assert data[1]["probe"] == "libc.so.6:malloc%return" and data[1]["count"] == 5
    assert data[1]["latency_ns"] == {"count": 5, "mean": 1200, "p50": 300, "p90": 5000,
                                     "p99": 5000, "max": 5000}
    rows = data[1]["hist"]["duration_ns"]
    assert rows[0] == [64, 128, 1] and rows[-1] == [4096, 8192, 1]
    assert sum(r[2] for r in rows) == 5
    text = "\n".join(agg.text())
    assert "libc.so.6:malloc%return: 5 returns" in text and "p99 5.000 us" in text


def _written(writer_class):
    buf = io.StringIO()
    writer = writer_class(Sink(buf, owned=False))
    for e in events():
        writer.write(e)
    writer.close()
    return buf.getvalue()


def test_jsonl_parses_back_with_the_contract_keys():
    lines = [json.loads(line) for line in _written(JsonlWriter).splitlines()]
    assert lines[0] == {"time_ns": 1_000_000_000, "pid": 10, "tid": 11, "probe": "work",
                        "symbol": "work", "address": "0x401000", "event": "entry",
                        "args": {"a": -5, "s": 'q"x', "p": None}}
    ret = lines[1]
    assert ret["event"] == "return" and ret["retval"] == "0x5000"
    assert ret["duration_ns"] == 100 and ret["args"] == {"size": 0, "ptr": "0x5000"}
    assert set(ret) == {"time_ns", "pid", "tid", "probe", "symbol", "address", "event",
                        "args", "retval", "duration_ns"}


def test_text_like_perf_script():
    lines = _written(TextWriter).splitlines()
    assert lines[0] == '1.000000 11 work: a=-5 s="q\\"x" p=(fault)'
    assert lines[1] == ("2.000000 12 libc.so.6:malloc%return: size=0 ptr=0x5000 "
                        "retval=0x5000 duration_ns=100")


def test_chrome_one_complete_event_per_call_spanning_the_call():
    data = json.loads(_written(ChromeWriter))
    calls = [e for e in data["traceEvents"] if e["ph"] == "X"]
    assert len(calls) == 6
    ret = calls[1]
    assert ret["ts"] == 2_000_000.0 and ret["dur"] == 0.1 and ret["args"]["retval"] == "0x5000"
    assert data["otherData"]["schema"] == 1


def test_tracer_return_path_filters_fetches_retval_and_summarises():
    from stepper.probing.trace import Tracer

    line = parse_probe("f%return n=%di:s64 r=$retval:s64 if retval >= 0 and duration_ns < 500")
    buf = io.StringIO()
    tracer = Tracer([line], JsonlWriter(Sink(buf, owned=False)), ["duration_ns"], None)
    tp = tracer.probes[0]
    for i, (retval, d) in enumerate([(3, 100), ((1 << 64) - 1, 100), (4, 900), (5, 300)]):
        entry = Event(1000 * i, 7, 7, tp, "f", 0x1000, (i, None))
        tracer.returned(entry, retval, entry.time_ns + d)
    tracer.close()
    got = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert [(e["args"], e["retval"], e["duration_ns"]) for e in got] == [
        ({"n": 0, "r": 3}, "0x3", 100), ({"n": 3, "r": 5}, "0x5", 300)]
    summary = tracer.aggregate.as_json()[0]
    assert summary["count"] == 2 and summary["latency_ns"]["max"] == 300


def test_register_and_string_probes_observe_without_a_hit_others_take_the_callback():
    """A breakpoint whose probes fetch only registers and strings at registers gets an
    observer (the register buffer, no Hit); a memory number, --stack or a return probe
    needs the Hit (the callback path)."""
    from stepper import kernel
    from stepper.probing.trace import Tracer

    def observer(text: str, stack: bool = False):
        tracer = Tracer([parse_probe(text)], None, [], None, stack=stack)
        return tracer, tracer.observer(tracer.probes, "f", 0x1000)

    for text in ("f a=%di:s64 b=%si", "f $arg2:u32 c=$comm"):
        assert observer(text)[1] is not None, text
    for text, stack in (("f a=+0(%di)", False), ("f a=%di", True), ("f%return a=%di", False)):
        assert observer(text, stack)[1] is None, text
    tracer, observe = observer("f a=%di:s32 b=%si if a < 0")
    buf = kernel.RegsBuffer()
    for rdi in (5, (1 << 64) - 2, 7, (1 << 32) - 1):
        buf[kernel.REG_INDEX["rdi"]], buf[kernel.REG_INDEX["rsi"]] = rdi, 0x40
        observe(12345, buf)
    summary = tracer.aggregate.summaries[0]
    assert tracer.probes[0].hits == summary.count == 2   # -2 and -1 (u32 max as s32)


_TYPES = ("u8", "s16", "s64", "x32", "x64", "string", "symbol")


@st.composite
def _entry_events(draw):
    types = draw(st.lists(st.sampled_from(_TYPES), max_size=4))
    args = tuple(FetchArg(f"n{i}_{draw(st.text(max_size=3))}", "%di", t, ("reg", "rdi"))
                 for i, t in enumerate(types))
    label = draw(st.text(min_size=1, max_size=12))
    probe = TraceProbe(ProbeLine(label, label, False, args, None, tuple(a.name for a in args)),
                       0)
    values = tuple(draw(st.none() | (st.text(max_size=8) if a.type in ("string", "symbol")
                                     else st.integers(-(1 << 63), (1 << 64) - 1)
                                     if a.type[0] != "x" else st.integers(0, (1 << 64) - 1)))
                   for a in args)
    return Event(draw(st.integers(0, 1 << 63)), draw(st.integers(1, 1 << 22)),
                 draw(st.integers(1, 1 << 22)), probe, draw(st.none() | st.text(max_size=8)),
                 draw(st.integers(0, (1 << 64) - 1)), values)


@given(st.lists(_entry_events(), min_size=1, max_size=4))
def test_prepared_jsonl_lines_are_what_json_dumps_writes(events):
    """An entry line put together from prepared parts is byte for byte the general one."""
    buf = io.StringIO()
    writer = JsonlWriter(Sink(buf, owned=False))
    for e in events + events:   # the second time from the prepared parts
        writer.write(e)
    writer.close()
    expected = "".join(json.dumps(event_json(e), separators=(",", ":")) + "\n"
                       for e in events + events)
    assert buf.getvalue() == expected
