"""C++ names: demangling (libstdc++'s demangler through cxxfilt), the base name and signature
forms a spec may use, and `stepper probe` on a g++-built program with a namespace,
overloads, an operator and templates (every overload, one by signature, globs)."""

from __future__ import annotations

import pytest

from stepper import demangle
from stepper.specs import parse_spec
from tests.support.runs import probe_specs


@pytest.mark.parametrize("mangled,full,base", [
    ("_ZN2ns3Acc3addEi", "ns::Acc::add(int)", "ns::Acc::add"),
    ("_ZN2ns3AccpLEi", "ns::Acc::operator+=(int)", "ns::Acc::operator+="),
    ("_ZN2ns7biggestIiEET_S1_S1_", "int ns::biggest<int>(int, int)", "ns::biggest<int>"),
    ("_ZNK2ns3Acc3getEv", "ns::Acc::get() const", "ns::Acc::get"),
    ("_ZN2nsltERKNS_3AccES2_", "ns::operator<(ns::Acc const&, ns::Acc const&)",
     "ns::operator<"),
    ("_ZN12_GLOBAL__N_11fEi", "(anonymous namespace)::f(int)", "(anonymous namespace)::f"),
    ("_ZN2ns1FclEii.cold", "ns::F::operator()(int, int) [clone .cold]", "ns::F::operator()"),
    ("main", "main", "main"),
])
def test_demangled_and_base_names(mangled, full, base):
    assert demangle.demangle(mangled) == full
    assert demangle.names_of(mangled) == (full, base)


def test_matching_by_base_name_signature_and_glob():
    add_int = "_ZN2ns3Acc3addEi"
    assert demangle.matches("ns::Acc::add", add_int, glob=False)
    assert demangle.matches("ns::Acc::add(int)", add_int, glob=False)
    assert not demangle.matches("ns::Acc::add(double)", add_int, glob=False)
    assert demangle.matches("ns::*", add_int, glob=True)
    assert demangle.matches("ns::biggest<int>(int,int)", "_ZN2ns7biggestIiEET_S1_S1_", False)
    assert not demangle.matches("main", "main", glob=False)   # C names match as written


def test_spec_syntax_keeps_cxx_names_whole():
    spec = parse_spec("ns::Acc::add")
    assert (spec.kind, spec.object, spec.pattern) == ("symbol", None, "ns::Acc::add")
    spec = parse_spec("prog:ns::Acc::add(int)+0x4")
    assert (spec.object, spec.pattern, spec.offset) == ("prog", "ns::Acc::add(int)", 4)
    spec = parse_spec("ns::Acc::operator+=")
    assert (spec.pattern, spec.offset) == ("ns::Acc::operator+=", 0)
    assert parse_spec("lib.so:util.c:12").kind == "line"


def hits(report) -> dict[str, int]:
    return {p["symbol"]: p["hits"] for p in report["probes"]}


@pytest.mark.parametrize("spec,expected", [
    ("ns::Acc::add", {"ns::Acc::add(int)": 3, "ns::Acc::add(double)": 3}),
    ("ns::Acc::add(int)", {"ns::Acc::add(int)": 3}),
    ("ns::Acc::add(double)", {"ns::Acc::add(double)": 3}),
    ("ns::Acc::operator+=", {"ns::Acc::operator+=(int)": 3}),
    ("ns::biggest<int>", {"int ns::biggest<int>(int, int)": 1}),
    ("ns::biggest*", {"int ns::biggest<int>(int, int)": 1,
                      "double ns::biggest<double>(double, double)": 1}),
    ("_ZN2ns3Acc3addEi", {"ns::Acc::add(int)": 3}),
])
def test_probe_by_cxx_name(build, tmp_path, spec, expected):
    exe = build("cxx_names")
    run, report = probe_specs(tmp_path, [spec], [exe])
    assert report is not None, run.stderr
    assert hits(report) == expected
    assert spec in run.stderr   # the table shows the spec and the demangled names
    assert all(name in run.stderr for name in expected)


def test_unknown_signature_is_one_line(build, tmp_path):
    run, report = probe_specs(tmp_path, ["ns::Acc::add(long)"], [build("cxx_names")])
    assert run.returncode == 2 and report is None and run.stderr.count("\n") == 1
    assert "no function is named ns::Acc::add(long)" in run.stderr


def test_line_probes_show_demangled_functions(build, tmp_path):
    exe = build("cxx_names")
    run, report = probe_specs(tmp_path, ["cxx_names.cpp:6"], [exe])
    assert report is not None, run.stderr
    assert {p["symbol"].split("+")[0] for p in report["probes"]} == {"ns::Acc::add(int)"}
    assert sum(p["hits"] for p in report["probes"]) > 0
