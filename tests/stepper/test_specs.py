"""Probe specs: parsing, static resolution (errors before the program starts), and runtime
resolution against real children whose printed `&t_one` / dlsym results are the ground truth."""

from __future__ import annotations

import os
import subprocess
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

import emu
from tests.support.programs import LINE_OF_COUNTER, build_pie_and_nopie, counter_program, gcc
from stepper.errors import StepperError
from stepper.specs import (AmbiguousSpecError, NoMatchError, ObjectNotFoundError, OffsetError,
                           Pending, Probe, Spec, SpecSyntaxError, parse_spec, resolve,
                           resolve_all, resolve_static)
from stepper.loaded import loaded_objects
from stepper.probe_set import ProbeSet
from stepper.symbols import ElfSymbols

PROGRAM = counter_program(
    third="__attribute__((noinline)) int t_three(int x) { return t_two(x) + t_one(x); }",
    before_main="/* a comment: no code on this line */\n",
    result="t_three(argc) & (int)getpid() & 0")
LINE_OF_COMMENT = PROGRAM.splitlines().index("/* a comment: no code on this line */") + 1

LIBRARY = "int dup_fn(int x) { return x + %d; }\nint only_%s(void) { return 0; }\n"
AMBIGUOUS = "int dup_fn(int);\nint main(void) { return dup_fn(0) & 0; }\n"
COLD = textwrap.dedent("""\
    #include <stdio.h>
    #include <stdlib.h>
    __attribute__((noinline, cold)) void rare(int x) { fprintf(stderr, "rare %d\\n", x); }
    __attribute__((noinline)) int t_hot(int x) {
        if (x == 42) {
            rare(x);
            rare(x + 1);
            abort();
        }
        return x * 3 + 1;
    }
    int main(int argc, char **argv) { return t_hot(argc) & 0; }
    """)
PLUGIN = "__attribute__((noinline)) int plug_fn(int x) { return x * 7; }\n"
LOADER = textwrap.dedent("""\
    #include <dlfcn.h>
    #include <stdio.h>
    #include <unistd.h>
    int main(int argc, char **argv) {
        char c;
        puts("ready"); fflush(stdout);
        if (read(0, &c, 1) < 0) return 1;
        void *h = dlopen(argv[1], RTLD_NOW);
        if (!h) return 2;
        printf("%p\\n", dlsym(h, "plug_fn")); fflush(stdout);
        return read(0, &c, 1) < 0;
    }
    """)


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    d = tmp_path_factory.mktemp("specs")
    for name, text in {"amb.c": AMBIGUOUS, "plug.c": PLUGIN, "loader.c": LOADER,
                       "cold.c": COLD, "a.c": LIBRARY % (1, "a"),
                       "b.c": LIBRARY % (2, "b")}.items():
        (d / name).write_text(text)
    for lib in "ab":
        gcc(d / f"lib{lib}.so", "-shared", "-fPIC", d / f"{lib}.c")
    return {
        **build_pie_and_nopie(d, PROGRAM),
        "amb": gcc(d / "amb", d / "amb.c", f"-L{d}", "-Wl,--no-as-needed", "-la", "-lb",
                   "-Wl,-rpath,$ORIGIN"),
        "plugin": gcc(d / "libplug.so.1.0", "-shared", "-fPIC", "-Wl,-soname,libplug.so.1",
                      d / "plug.c"),
        "loader": gcc(d / "loader", d / "loader.c"),
        "cold": gcc(d / "cold", "-O2", d / "cold.c"),
    }


def value(exe: str, name: str) -> int:
    (symbol,) = ElfSymbols.load(exe).lookup(name)
    return symbol.value


# -- parsing ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("t_one", dict(kind="symbol", pattern="t_one", offset=0, object=None)),
    ("t_one+4", dict(kind="symbol", pattern="t_one", offset=4)),
    ("t_one+0x1f", dict(kind="symbol", pattern="t_one", offset=0x1F)),
    ("libc.so.6:malloc", dict(kind="symbol", object="libc.so.6", pattern="malloc")),
    ("libc.so.6:mem*", dict(kind="symbol", object="libc.so.6", pattern="mem*")),
    ("t_*", dict(kind="symbol", pattern="t_*")),
    ("0x401136", dict(kind="address", address=0x401136, object=None)),
    ("401136", dict(kind="address", address=0x401136)),
    ("libc.so.6:0x9be70", dict(kind="address", object="libc.so.6", address=0x9BE70)),
    ("prog.c:12", dict(kind="line", file="prog.c", line=12, object=None)),
    ("src/prog.c:7", dict(kind="line", file="src/prog.c", line=7)),
    ("libc.so.6:malloc.c:3287", dict(kind="line", object="libc.so.6", file="malloc.c",
                                     line=3287)),
])
def test_parse_forms(text, expected):
    spec = parse_spec(text)
    assert spec.text == text
    for key, want in expected.items():
        assert getattr(spec, key) == want, key
    assert spec.is_glob == ("*" in text)


@pytest.mark.parametrize("text, message", [
    ("", "empty probe spec"),
    ("t one", "contains whitespace"),
    (":malloc", "empty object name"),
    ("libc.so.6:", "empty symbol name"),
    ("+4", "empty symbol name"),
    ("t_one+", "bad offset ''"),
    ("t_one+x", "bad offset 'x'"),
    ("t_one+-4", "bad offset '-4'"),
    ("0xZZ", "bad address '0xZZ'"),
    ("a:b:c", "too many ':'"),
    ("prog.c:0", "line numbers start at 1"),
    (":12", "empty file name"),
    ("a:b:c:12", "too many ':'"),
])
def test_parse_errors_are_one_line(text, message):
    with pytest.raises(SpecSyntaxError, match=message) as e:
        parse_spec(text)
    assert "\n" not in str(e.value) and isinstance(e.value, StepperError)


names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)


@given(st.one_of(st.none(), st.from_regex(r"lib[a-z0-9]{1,8}\.so(\.[0-9]){0,2}", fullmatch=True)),
       names, st.integers(min_value=0, max_value=2**32))
def test_parse_round_trip(obj, name, offset):
    text = (f"{obj}:" if obj else "") + name + (f"+{offset:#x}" if offset else "")
    spec = parse_spec(text)
    assert (spec.kind, spec.object, spec.pattern, spec.offset) == ("symbol", obj, name, offset)


# -- static resolution ------------------------------------------------------------------------

def static(text: str, exe: str) -> list:
    return resolve_static(parse_spec(text), exe)


def test_symbol_in_executable(exe):
    (probe,) = static("t_one", exe)
    assert probe == Probe("t_one", os.path.basename(exe), "t_one", value(exe, "t_one"),
                          os.path.realpath(exe))


def test_glob_probes_each_address_once(exe):
    probes = static("t_*", exe)
    assert [p.symbol for p in probes] == sorted(["t_one", "t_two", "t_three"],
                                                key=lambda n: value(exe, n))
    assert all(p.spec == "t_*" for p in probes)


def test_alias_probes_the_same_address(exe):
    (alias,) = static("t_one_alias", exe)
    assert alias.address == value(exe, "t_one") and alias.symbol == "t_one_alias"
    both = resolve_all([parse_spec("t_one"), parse_spec("t_one_alias")],
                       _static_objects(exe))
    assert len(both) == 1 and both[0].spec == "t_one"


def test_glob_leaves_out_cold_parts(build):
    exe = build["cold"]
    if not ElfSymbols.load(exe).lookup("t_hot.cold"):
        pytest.skip("this gcc did not split t_hot into a .cold part")
    assert [p.symbol for p in static("t_h*", exe)] == ["t_hot"]
    assert [p.symbol for p in static("t_hot*.cold", exe)] == ["t_hot.cold"]
    assert [p.symbol for p in static("t_hot.cold", exe)] == ["t_hot.cold"]


def test_offset_on_an_instruction_boundary(exe):
    start = value(exe, "t_one")
    first = emu.decode(ElfSymbols.load(exe).read(start, 15), start)
    (probe,) = static(f"t_one+{first.length}", exe)
    assert probe.address == start + first.length
    assert probe.symbol == f"t_one+{first.length:#x}"


def test_offset_inside_an_instruction(exe):
    start = value(exe, "t_one")
    first = emu.decode(ElfSymbols.load(exe).read(start, 15), start)
    assert first.length > 1, "the test needs a multi-byte first instruction"
    with pytest.raises(OffsetError, match=r"t_one\+0x1 is inside the instruction at "
                                          r"t_one\+0x0 .* nearest boundaries are \+0x0 and "
                                          rf"\+{first.length:#x}") as e:
        static("t_one+1", exe)
    assert "\n" not in str(e.value)


def test_offset_past_the_end(exe):
    size = ElfSymbols.load(exe).lookup("t_one")[0].size
    with pytest.raises(OffsetError, match=rf"t_one\+{size:#x} is past the end of t_one"):
        static(f"t_one+{size}", exe)


def test_address_as_nm_prints_it(exe):
    nm = subprocess.run(["nm", exe], capture_output=True, text=True, check=True).stdout
    (line,) = [ln for ln in nm.splitlines() if ln.endswith(" T t_two")]
    (probe,) = static("0x" + line.split()[0], exe)
    assert probe.address == value(exe, "t_two") and probe.symbol == "t_two"
    with pytest.raises(NoMatchError, match=r"0x10 is not in the code of"):
        static("0x10", exe)


def test_address_inside_an_instruction(exe):
    with pytest.raises(OffsetError, match="is inside the instruction"):
        static(f"{value(exe, 't_one') + 1:#x}", exe)


def test_library_symbol_is_pending_until_mapped(exe):
    (pending,) = static("libc.so.6:getpid", exe)
    assert isinstance(pending, Pending) and pending.object == "libc.so.6"
    # The plain name means libc's getpid, not the dynamic loader's private copy.
    (plain,) = static("getpid", exe)
    assert isinstance(plain, Pending) and plain.object == "libc.so.6"


def test_executable_first_then_libraries(build):
    """`main` is in the program and in no library: the program's. `only_a` only in liba."""
    (probe,) = static("main", build["amb"])
    assert isinstance(probe, Probe)
    (pending,) = static("only_a", build["amb"])
    assert pending.object == "liba.so"


def test_ambiguous_name_needs_an_object(build):
    with pytest.raises(AmbiguousSpecError,
                       match=r"'dup_fn' matches in several libraries \(liba.so, libb.so\): "
                             r"write OBJECT:dup_fn") as e:
        static("dup_fn", build["amb"])
    assert "\n" not in str(e.value)
    (pending,) = static("libb.so:dup_fn", build["amb"])
    assert pending.object == "libb.so"


def test_no_match_suggests_close_names(exe):
    with pytest.raises(NoMatchError, match=r"'t_onee': no function is named t_onee in .* "
                                           r"\(did you mean t_one"):
        static("t_onee", exe)
    with pytest.raises(NoMatchError, match=r"'zz_\*': no function matches zz_\* in "):
        static("zz_*", exe)
    with pytest.raises(NoMatchError, match=r"^probe spec 'libc.so.6:nosuch': "
                                           r"no function is named nosuch in libc.so.6"):
        static("libc.so.6:nosuch", exe)


def test_object_never_loaded(exe):
    with pytest.raises(ObjectNotFoundError,
                       match=r"never loads libnosuch.so.* it does not call dlopen") as e:
        static("libnosuch.so:f", exe)
    assert "\n" not in str(e.value)
    with pytest.raises(ObjectNotFoundError, match="no such executable"):
        static("t_one", exe + ".missing")


def test_object_a_dlopen_program_may_load(build):
    (pending,) = static("libnosuch.so:f", build["loader"])
    assert pending.path is None
    assert "libnosuch.so was never loaded" in pending.warning()
    # Found on disk by path: checked now, not at dlopen time.
    with pytest.raises(NoMatchError, match="no function is named nosuch in libplug.so.1.0"):
        static(f"{build['plugin']}:nosuch", build["loader"])


def test_file_line(build):
    exe = build["pie"]
    probes = static(f"prog.c:{LINE_OF_COUNTER}", exe)
    lines = ElfSymbols.load(exe).lines("prog.c", LINE_OF_COUNTER)
    assert [p.address for p in probes] == next(iter(lines.values()))
    assert all(p.symbol.startswith("t_one") for p in probes)
    suffix = f"{os.path.basename(str(build['dir']))}/prog.c:{LINE_OF_COUNTER}"
    assert static(suffix, exe) == [Probe(suffix, p.object, p.symbol, p.address, p.path)
                                   for p in probes]


def test_file_line_errors(build):
    with pytest.raises(NoMatchError, match=rf"no code at line {LINE_OF_COMMENT} of .*prog.c "
                                           r"\(nearest lines with code: \d+, \d+\)"):
        static(f"prog.c:{LINE_OF_COMMENT}", build["pie"])
    with pytest.raises(NoMatchError, match="no source file matching 'other.c'"):
        static("other.c:3", build["pie"])
    with pytest.raises(NoMatchError, match=r"nopie has no DWARF line table \(build it with -g\)"):
        static(f"prog.c:{LINE_OF_COUNTER}", build["nopie"])


# -- runtime resolution -----------------------------------------------------------------------

def test_runtime_addresses_match_the_program(running):
    proc, exe, t_one, getpid = running
    objects = loaded_objects(proc.pid)
    (probe,) = resolve(parse_spec("t_one"), objects)
    assert probe.address == t_one and probe.object == os.path.basename(exe)
    (libc,) = resolve(parse_spec("libc.so.6:getpid"), objects)
    assert libc.address == getpid and libc.object == "libc.so.6" and libc.symbol == "getpid"
    (plain,) = resolve(parse_spec("getpid"), objects)
    assert plain.address == getpid
    (addr,) = resolve(parse_spec(f"{value(exe, 't_one'):#x}"), objects)   # as nm prints it
    assert addr.address == t_one
    (absolute,) = resolve(parse_spec(f"{getpid:#x}"), objects)          # as a debugger shows
    assert absolute.address == getpid and absolute.object == "libc.so.6"


def test_library_glob_at_runtime(running):
    proc, _exe, _t_one, getpid = running
    probes = resolve(parse_spec("libc.so.6:getp*"), loaded_objects(proc.pid))
    assert getpid in {p.address for p in probes}
    assert len({p.address for p in probes}) == len(probes)
    assert all(p.symbol.startswith("getp") for p in probes)


def test_probe_set_for_a_spawned_program(running):
    proc, exe, t_one, getpid = running
    probe_set = ProbeSet.for_executable(["t_one", "t_*", "t_one_alias", "libc.so.6:getpid"],
                                        exe)
    # At the exec stop only the executable (and the loader) are mapped.
    objects = loaded_objects(proc.pid)
    early = probe_set.update([o for o in objects if o.main])
    assert {p.address for p in early} >= {t_one} and getpid not in {p.address for p in early}
    assert len(early) == 3                                  # t_one, t_two, t_three
    assert probe_set.warnings() == ["probe spec 'libc.so.6:getpid': libc.so.6 was never loaded"]
    late = probe_set.update(objects)
    assert [(p.spec, p.address) for p in late] == [("libc.so.6:getpid", getpid)]
    assert probe_set.update(objects) == [] and probe_set.warnings() == []
    assert [p.spec for p in probe_set.probes if p.address == t_one] == ["t_one"]


def test_dlopen_library_by_soname(build):
    loader, plugin = build["loader"], build["plugin"]
    probe_set = ProbeSet.for_executable(["libplug.so.1:plug_*", "libplug.so.1:nosuch"],
                                        loader)
    proc = subprocess.Popen([loader, plugin], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        assert probe_set.update(loaded_objects(proc.pid)) == []
        proc.stdin.write("x")
        proc.stdin.flush()
        plug_fn = int(proc.stdout.readline(), 16)
        (probe,) = probe_set.update(loaded_objects(proc.pid))
        assert (probe.object, probe.symbol, probe.address) == ("libplug.so.1.0", "plug_fn",
                                                               plug_fn)
        # Unknown before the run, so reported at exit instead of stopping the program.
        (problem,) = probe_set.warnings()
        assert "'libplug.so.1:nosuch': no function is named nosuch in libplug.so.1.0" in problem
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
    assert proc.returncode == 0


def test_probe_set_for_an_attached_process(running):
    proc, _exe, t_one, getpid = running
    probe_set = ProbeSet.for_process(["t_one", "getpid", "libnotyet.so:f"],
                                     loaded_objects(proc.pid))
    assert {p.address for p in probe_set.probes} == {t_one, getpid}
    assert probe_set.warnings() == ["probe spec 'libnotyet.so:f': libnotyet.so was never loaded"]


def test_unqualified_no_match_at_runtime(running):
    proc, *_ = running
    with pytest.raises(NoMatchError, match="'zz_nope': no function is named zz_nope in"):
        resolve(parse_spec("zz_nope"), loaded_objects(proc.pid))


def _static_objects(exe: str):
    from stepper.loaded import LoadedObject
    return [LoadedObject(os.path.realpath(exe), 0, main=True)]


def test_spec_is_a_plain_dataclass():
    assert parse_spec("t_one") == Spec("t_one", "symbol", pattern="t_one")
