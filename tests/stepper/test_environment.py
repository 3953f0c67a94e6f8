"""The program's environment is the one stepper was started with: nothing of what Python adds
to its own at start (PEP 538 locale coercion sets LC_CTYPE=C.UTF-8 when no locale variable is
set, as under `env -i`, cron or systemd). Real programs: env(1) prints its environment,
wc -m counts characters by the locale; both are compared with their unprobed run."""

from __future__ import annotations

import subprocess
import sys

import pytest

#: No locale variable at all: what makes Python coerce its own locale.
BARE = {"PATH": "/usr/bin:/bin", "MINE": "1"}


def _probed(argv: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stepper.cli", "probe", "-p",
                           "libc.so.6:setlocale", "--", *argv], env=env, capture_output=True,
                          timeout=120)


def test_cli_program_gets_stepper_s_own_environment():
    plain = subprocess.run(["env"], env=BARE, capture_output=True, timeout=60)
    assert plain.stdout == b"PATH=/usr/bin:/bin\nMINE=1\n"
    probed = _probed(["env"], BARE)
    assert (probed.stdout, probed.returncode) == (plain.stdout, 0), probed.stderr
    assert b"setlocale  " in probed.stderr   # the probe was there (its row in the table)


def test_cli_program_counts_as_unprobed_without_a_locale(tmp_path):
    text = tmp_path / "text"
    text.write_bytes("h\u00e9llo w\u00f6rld\n".encode())   # 14 bytes, 12 characters
    plain = subprocess.run(["wc", "-m", str(text)], env=BARE, capture_output=True, timeout=60)
    assert plain.stdout.split()[0] == b"14"   # the C locale counts bytes
    probed = _probed(["wc", "-m", str(text)], BARE)
    assert (probed.stdout, probed.returncode) == (plain.stdout, 0), probed.stderr


def test_a_locale_given_to_stepper_is_passed_on():
    env = dict(BARE, LC_CTYPE="C.UTF-8")
    plain = subprocess.run(["env"], env=env, capture_output=True, timeout=60)
    assert b"LC_CTYPE=C.UTF-8\n" in plain.stdout
    assert _probed(["env"], env).stdout == plain.stdout


def test_library_passes_os_environ_less_the_coerced_locale():
    """api.spawn(env=None): os.environ with the application's own changes, without the
    LC_CTYPE Python added."""
    coerced = subprocess.run([sys.executable, "-c", "import os; print(os.getenv('LC_CTYPE'))"],
                             env=BARE, capture_output=True, text=True, timeout=60).stdout
    if coerced.strip() != "C.UTF-8":
        pytest.skip("no C.UTF-8 locale here: Python does not coerce its locale")
    script = ("import os\nfrom stepper import api\n"
              "assert os.environ.get('LC_CTYPE') == 'C.UTF-8'  # Python's coercion\n"
              "os.environ['ADDED'] = 'by the application'\n"
              "proc = api.spawn(['env'])\nstatus = proc.run()\n")
    run = subprocess.run([sys.executable, "-c", script], env=BARE, capture_output=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout == b"PATH=/usr/bin:/bin\nMINE=1\nADDED=by the application\n"
