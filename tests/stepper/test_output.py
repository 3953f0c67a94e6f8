"""`stepper probe --json`: a report that cannot be written is refused before the program
runs (it would have cost the run and its exit status), `--json -` only where stdout is
stepper's alone (--pid). The program here is touch(1): a marker file tells whether it ran."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from stepper.errors import StepperError


def _probe(json_path: str, marker, **popen) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stepper.cli", "probe", "--quiet", "--json",
                           json_path, "-p", "libc.so.6:malloc", "--", "touch", str(marker)],
                          capture_output=True, timeout=120, **popen)


@pytest.mark.parametrize("json_path, expected", [
    ("/proc/version", "cannot write /proc/version: "),   # opens for writing, even as root
    ("", "--json needs a file name"),
    ("-", "--json -: stdout belongs to the program; write the report to a file, or to "
          "another descriptor: --json /dev/fd/3 3>report.json"),
])
def test_unwritable_report_refused_before_the_program_runs(tmp_path, json_path, expected):
    marker = tmp_path / "ran"
    run = _probe(json_path, marker)
    text = run.stderr.decode()
    assert run.returncode == 2 and text.count("\n") == 1, text
    assert text.startswith(f"stepper: error: {expected}")
    assert not marker.exists()


def test_report_to_another_descriptor(tmp_path):
    """`--json /dev/fd/3 3>report.json`, the form the refusal of `-` suggests."""
    import os

    marker, out = tmp_path / "ran", tmp_path / "report.json"
    run = subprocess.run(["sh", "-c", 'exec "$@" 3>"$OUT"', "sh", sys.executable, "-m",
                          "stepper.cli", "probe", "--quiet", "--json", "/dev/fd/3", "-p",
                          "libc.so.6:malloc", "--", "touch", str(marker)],
                         capture_output=True, timeout=120, env=dict(os.environ, OUT=str(out)))
    assert run.returncode == 0, run.stderr
    assert marker.exists() and run.stdout == b""
    report = json.loads(out.read_text())
    assert report["exit_code"] == 0 and report["probes"][0]["hits"] > 0


def test_report_to_dev_stdout_is_a_path_like_any_other(tmp_path):
    marker = tmp_path / "ran"
    run = _probe("/dev/stdout", marker)
    assert run.returncode == 0 and marker.exists(), run.stderr
    assert json.loads(run.stdout)["exit_code"] == 0   # touch prints nothing of its own


def test_stdout_is_for_the_report_only_when_attached():
    from stepper.commands.probe import check_json

    check_json("-", spawned=False)
    with pytest.raises(StepperError, match="stdout belongs to the program"):
        check_json("-", spawned=True)
    with pytest.raises(StepperError, match="needs a file name"):
        check_json("", spawned=False)


def test_a_refused_run_creates_no_report_file(tmp_path):
    """The file is created last, once every probe is in: a bad spec leaves nothing behind."""
    marker, out = tmp_path / "ran", tmp_path / "report.json"
    run = subprocess.run([sys.executable, "-m", "stepper.cli", "probe", "--json", str(out),
                          "-p", "libc.so.6:no_such_function_here", "--", "touch", str(marker)],
                         capture_output=True, timeout=120)
    assert run.returncode == 2 and b"no_such_function_here" in run.stderr
    assert not out.exists() and not marker.exists()
