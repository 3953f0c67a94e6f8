"""Report files: created 0600 (or stricter with the umask), opened before the work, and a
symlink followed only where the kernel's protected_symlinks rule would follow it.

`stepper probe --json`: a report that cannot be written is refused before the program runs
(it would have cost the run and its exit status), `--json -` only where stdout is stepper's
alone (--pid). The program there is touch(1): a marker file tells whether it ran."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from stepper import cli
from stepper.errors import StepperError
from stepper.output import check_writable, open_output, write_json

NOBODY = 65534


@pytest.fixture
def umask():
    def set_umask(value: int) -> None:
        os.umask(value)
    old = os.umask(0o022)
    yield set_umask
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o600), (0o002, 0o600), (0o000, 0o600),
                                        (0o077, 0o600), (0o277, 0o400)])
def test_a_report_is_created_0600_unless_the_umask_is_stricter(tmp_path, umask, mask, mode):
    umask(mask)
    path = tmp_path / "report.json"
    write_json(str(path), {"argv": ["secret"]})
    assert os.stat(path).st_mode & 0o777 == mode
    assert json.loads(path.read_text()) == {"argv": ["secret"]}


def test_the_cli_json_report_is_0600(tmp_path, umask):
    path = tmp_path / "fuzz.json"
    assert cli.main(["fuzz", "--cases", "20", "--workers", "1", "--regressions", str(tmp_path),
                     "--json", str(path)]) == 0
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_open_output_creates_now_and_replaces_the_contents_later(tmp_path, umask):
    path = tmp_path / "report.json"
    path.write_text("an older, longer report\n" * 10)
    with open_output(str(path)) as out:
        assert path.read_text().startswith("an older")  # nothing lost before the report
        out.write_json([1])
    assert path.read_text() == "[\n  1\n]\n"
    fresh = tmp_path / "fresh.json"
    out = open_output(str(fresh))
    assert fresh.exists() and os.stat(fresh).st_mode & 0o777 == 0o600
    out.close()


def _sticky_shared(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    return shared, victim


def test_a_symlink_planted_by_another_user_in_a_sticky_directory_is_not_followed(tmp_path, capsys):
    shared, victim = _sticky_shared(tmp_path)
    link = shared / "report.json"
    os.symlink(victim, link)
    os.lchown(link, NOBODY, NOBODY)
    with pytest.raises(StepperError, match="symlink owned by uid 65534"):
        open_output(str(link))
    with pytest.raises(StepperError, match="symlink owned by uid 65534"):
        check_writable(str(link))
    assert cli.main(["fuzz", "--cases", "20", "--workers", "1", "--regressions", str(tmp_path),
                     "--json", str(link)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert victim.read_text() == "precious\n"


def test_a_symlink_of_ours_or_outside_sticky_directories_is_followed(tmp_path):
    shared, victim = _sticky_shared(tmp_path)
    mine = shared / "mine.json"
    os.symlink(victim, mine)  # ours (the test's user)
    write_json(str(mine), {"a": 1})
    assert json.loads(victim.read_text()) == {"a": 1}
    plain = tmp_path / "plain.json"
    os.symlink(victim, plain)
    os.lchown(plain, NOBODY, NOBODY)  # someone else's, but in a directory only we can write
    write_json(str(plain), {"b": 2})
    assert json.loads(victim.read_text()) == {"b": 2}


def test_dev_stdout_still_works():
    code = "from stepper.output import write_json; write_json('/dev/stdout', {'ok': True})"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60,
                         check=False)
    assert run.returncode == 0, run.stderr.decode()
    assert json.loads(run.stdout) == {"ok": True}


# ------------------------------------------------------------- probe --json

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
