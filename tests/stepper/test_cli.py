"""The `stepper` command itself: `--version`, and `--help` without loading the commands."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version

#: Modules that take most of the start-up time of a command that needs them; the help and the
#: version need none of them.
HEAVY = ("unicorn", "hypothesis", "capstone", "keystone", "emu", "elftools", "ptrace",
         "stepper.fuzz", "stepper.bench", "stepper.api", "stepper.commands.probe")


def _modules_after(argv: list[str], env: dict | None = None) -> set[str]:
    code = ("import sys\nfrom stepper import cli\ntry:\n    cli.main(%r)\nexcept SystemExit:\n"
            "    pass\nprint(' '.join(sys.modules))" % (argv,))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env=env)
    assert run.returncode == 0, run.stderr
    return set(run.stdout.split("\n")[-2].split())


def test_help_loads_no_command_module():
    loaded = _modules_after(["--help"])
    assert "argparse" in loaded  # the probe sees what was imported
    heavy = sorted(m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert heavy == []


def test_a_warm_probe_run_loads_no_elf_parser_nor_python_ptrace(tmp_path):
    """The ELF facts come from the cache and the program is spawned by stepper.spawn: a
    plain probe run with a warm cache imports neither pyelftools nor python-ptrace."""
    env = dict(os.environ, STEPPER_CACHE=str(tmp_path))
    argv = ["probe", "--quiet", "-p", "libc.so.6:malloc", "--", "/bin/true"]
    cold = _modules_after(argv, env)
    assert "stepper.session" in cold   # the run happened
    warm = _modules_after(argv, env)
    assert "stepper.session" in warm and "emu" in warm
    assert sorted(m for m in warm if m.split(".")[0] in ("elftools", "ptrace")) == []


def test_a_command_loads_only_its_own_module():
    loaded = _modules_after(["corpus", "--help"])
    assert "stepper.commands.corpus" in loaded
    assert not {"stepper.commands.probe", "stepper.commands.fuzz", "stepper.commands.bench",
                "hypothesis", "unicorn"} & loaded


def test_help_lists_every_command():
    run = subprocess.run([sys.executable, "-m", "stepper.cli", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0
    for name in ("bench", "corpus", "demo", "fuzz", "probe"):
        assert f"\n    {name} " in run.stdout


def test_version():
    run = subprocess.run([sys.executable, "-m", "stepper.cli", "--version"],
                         capture_output=True, text=True, timeout=60)
    assert (run.returncode, run.stdout) == (0, f"stepper {version('stepper')}\n")


def test_command_help_has_its_options():
    run = subprocess.run([sys.executable, "-m", "stepper.cli", "probe", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "--json FILE" in run.stdout and "--pid PID" in run.stdout
