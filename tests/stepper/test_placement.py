"""stepper.placement: the CPU choice (pure), the stat parser, the opt-out, and on real
tracees that the policy moves only stepper's own thread, never the program's affinity."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stepper import api, placement
from stepper.errors import StepperError

from tests.support.elf import symbol
from tests.support.runs import run_plain

CPUS = st.integers(0, 63)


@given(history=st.lists(CPUS, max_size=20), allowed=st.frozensets(CPUS, min_size=1),
       current=st.none() | CPUS, agree=st.integers(1, 5))
def test_choose_never_leaves_the_allowed_set(history, allowed, current, agree):
    cpu = placement.choose(history, allowed, current, agree)
    assert cpu is None or cpu in allowed


@given(history=st.lists(CPUS, max_size=20), allowed=st.frozensets(CPUS, min_size=1),
       current=st.none() | CPUS, agree=st.integers(1, 5))
def test_choose_moves_only_when_the_last_readings_agree(history, allowed, current, agree):
    cpu = placement.choose(history, allowed, current, agree)
    kept = current if current in allowed else None
    if cpu != kept:
        assert len(history) >= agree and set(history[-agree:]) == {cpu}


def test_choose_follows_a_settled_move_and_ignores_a_blip():
    assert placement.choose([0, 1, 1], {0, 1}, 0, agree=2) == 1
    assert placement.choose([1, 1, 0], {0, 1}, 1, agree=2) == 1  # one reading: no move
    assert placement.choose([3, 3], {0, 1}, 0, agree=2) == 0     # not ours to use


@given(comm=st.binary(min_size=0, max_size=15).filter(lambda b: b"\n" not in b),
       cpu=st.integers(0, 4095))
def test_thread_cpu_survives_any_command_name(comm, cpu):
    # A stat line as the kernel writes it: pid (comm) state, then fields 4..52.
    fields = [str(n) for n in range(4, 53)]
    fields[39 - 4] = str(cpu)
    line = b"1234 (" + comm + b") S " + " ".join(fields).encode() + b"\n"
    assert placement.thread_cpu(line) == cpu


def test_a_bad_policy_in_the_environment_is_refused_before_the_program_starts(monkeypatch):
    monkeypatch.setenv(placement.ENV, "everywhere")
    with pytest.raises(StepperError, match="STEPPER_PLACEMENT 'everywhere': choose one of"):
        api.spawn(["/bin/true"])


def test_bad_policy_on_the_command_line_is_one_line_and_exit_2(build, tmp_path):
    marker = tmp_path / "ran"
    cli = [sys.executable, "-m", "stepper.cli", "probe", "-p", "work"]
    p = subprocess.run([*cli, "--placement", "anywhere", "--", "touch", str(marker)],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "--placement" in p.stderr and not marker.exists()
    env = {**os.environ, placement.ENV: "anywhere"}
    p = subprocess.run([*cli, "--", build("affinity"), "10"], capture_output=True, text=True,
                       env=env)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert "STEPPER_PLACEMENT" in p.stderr


@pytest.mark.parametrize("policy", placement.POLICIES)
def test_a_probed_run_leaves_the_programs_affinity_as_unprobed(build, tmp_path, policy):
    exe = build("affinity")
    argv = [exe, "3000"]  # enough stops for the policy to read the CPU many times
    plain = run_plain(argv)
    cli = [sys.executable, "-m", "stepper.cli", "probe", "--quiet", "--placement", policy,
           "--json", str(tmp_path / "r.json"), "-p", "work", "--", *argv]
    probed = subprocess.run(cli, capture_output=True, timeout=120)
    assert probed.returncode == plain.returncode == 0, probed.stderr
    assert probed.stdout == plain.stdout
    assert b"thread:" in plain.stdout and b"main:" in plain.stdout


def _loop_affinity(exe: str, policy: str, allowed: set[int] | None = None):
    """Run `exe` probed on `work` under `policy`; the loop thread's affinity at each hit."""
    proc = api.spawn([exe, "2000"])
    proc.placement = policy
    seen: list[frozenset[int]] = []
    address, _ = symbol(exe, "work")
    proc.break_at(proc.load_bias + address,
                  lambda hit: seen.append(frozenset(os.sched_getaffinity(0))))
    before = os.sched_getaffinity(0)
    if allowed is not None:
        os.sched_setaffinity(0, allowed)  # as `taskset` would have, after the program started
    try:
        status = proc.run()
    finally:
        after = os.sched_getaffinity(0)
        os.sched_setaffinity(0, before)
    assert status.exit_code == 0
    return seen, after


needs_two = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2,
                               reason="the policy has nothing to choose on one CPU")


@needs_two
def test_follow_pins_only_the_loop_thread_and_gives_it_back(build, capfd):
    before = os.sched_getaffinity(0)
    seen, after = _loop_affinity(build("affinity"), "follow")
    assert seen and all(len(s) == 1 and s <= before for s in seen)
    assert after == before


@needs_two
def test_none_leaves_stepper_where_it_was(build, capfd):
    before = frozenset(os.sched_getaffinity(0))
    seen, after = _loop_affinity(build("affinity"), "none")
    assert seen and set(seen) == {before} and after == before


@needs_two
def test_follow_chooses_only_among_the_cpus_stepper_may_use(build, capfd):
    for cpu in sorted(os.sched_getaffinity(0))[:2]:
        seen, after = _loop_affinity(build("affinity"), "follow", {cpu})
        assert seen and set(seen) == {frozenset({cpu})} and after == {cpu}


def test_running_tasks_is_the_fourth_field_of_loadavg():
    assert placement.running_tasks(b"0.08 0.48 0.83 1/91 11335\n") == 1
    assert placement.running_tasks(b"4.10 3.00 2.50 12/340 999\n") == 12


def _may_yield(drop_cap: bool) -> str:
    """placement.may_yield() in a fresh interpreter with RLIMIT_NICE 0, with or without
    CAP_SYS_NICE."""
    code = ("import resource; resource.setrlimit(resource.RLIMIT_NICE, (0, 0)); "
            "from stepper import placement; print(placement.may_yield())")
    drop = ["setpriv", "--bounding-set", "-sys_nice"] if drop_cap else []
    p = subprocess.run([*drop, sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to drop CAP_SYS_NICE")
def test_may_yield_only_where_the_thread_could_come_back_to_sched_other():
    # Coming back from SCHED_IDLE needs CAP_SYS_NICE or RLIMIT_NICE >= 20 - nice (sched(7)).
    assert _may_yield(drop_cap=False) == "True"
    assert _may_yield(drop_cap=True) == "False"


def _run_watched(exe: str, argv: list[str], policy: str):
    """Run `exe` probed on `work` under `policy`: the loop thread's scheduling policy at each
    hit, after the run, and the follower."""
    proc = api.spawn([exe, *argv])
    proc.placement = policy
    seen: list[int] = []
    address, _ = symbol(exe, "work")
    proc.break_at(proc.load_bias + address, lambda hit: seen.append(os.sched_getscheduler(0)))
    before = os.sched_getscheduler(0)
    status = proc.run()
    assert status.exit_code == 0
    return seen, before, os.sched_getscheduler(0), proc._session.follower


IDLE = os.SCHED_IDLE | os.SCHED_RESET_ON_FORK
can_yield = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 or not placement.may_yield(),
                               reason="yielding needs two CPUs and the right to come back")


@pytest.fixture
def quiet(tmp_path, monkeypatch):
    """The machine as the policy sees it: a /proc/loadavg stand-in saying `running` tasks."""
    def say(running: int) -> None:
        fake = tmp_path / "loadavg"
        fake.write_text(f"0.00 0.00 0.00 {running}/100 4242\n")
        monkeypatch.setattr(placement, "LOADAVG", str(fake))
    return say


@can_yield
def test_follow_yields_on_a_quiet_machine_and_gives_the_policy_back(build, quiet, capfd):
    quiet(1)
    seen, before, after, follower = _run_watched(build("affinity"), ["300"], "follow")
    assert before == after == os.SCHED_OTHER
    assert follower.yields >= 1 and not follower.yielding
    first = placement.QUIET_EVERY * placement.QUIET_AGREE  # stops before it may yield
    assert set(seen[:first - 1]) == {os.SCHED_OTHER} and IDLE in seen[first:]
    assert set(seen) <= {os.SCHED_OTHER, IDLE}


@can_yield
def test_follow_does_not_yield_while_another_task_is_runnable(build, quiet, capfd):
    quiet(2)
    seen, _, after, follower = _run_watched(build("affinity"), ["300"], "follow")
    assert seen and set(seen) == {os.SCHED_OTHER} == {after} and follower.yields == 0


@can_yield
@pytest.mark.parametrize("policy", ["pin", "none"])
def test_pin_and_none_never_change_the_tracers_policy(build, quiet, capfd, policy):
    quiet(1)
    seen, _, after, follower = _run_watched(build("affinity"), ["300"], policy)
    assert seen and set(seen) == {os.SCHED_OTHER} == {after} and follower.yields == 0


@can_yield
def test_a_yielding_tracer_leaves_the_programs_policy_and_affinity_as_unprobed(build, quiet,
                                                                              capfd):
    quiet(1)
    exe = build("affinity")
    plain = run_plain([exe, "300"])
    capfd.readouterr()
    _, _, _, follower = _run_watched(exe, ["300"], "follow")
    out = capfd.readouterr().out.encode()
    assert follower.yields >= 1
    assert out == plain.stdout and b"policy=" in out


@can_yield
def test_a_program_with_rare_hits_runs_to_its_end_under_a_yielding_tracer(build, quiet, capfd):
    # Every stop comes long after its resume: the first poll misses and the loop blocks in
    # waitpid (no spinning), and every MISSES misses the next stop's CPU is read.
    quiet(1)
    exe = build("rare_hits")
    plain = run_plain([exe, "60", "2000"])
    capfd.readouterr()
    seen, _, after, follower = _run_watched(exe, ["60", "2000"], "follow")
    assert capfd.readouterr().out.encode() == plain.stdout
    assert len(seen) == 60 and after == os.SCHED_OTHER and follower.yields >= 1


@needs_two
def test_polls_that_miss_make_the_next_stop_read_its_cpu():
    child = subprocess.Popen(["sleep", "30"])
    try:
        follower = placement.Follower(child.pid, "follow").start()
        try:
            read = follower.readings
            for _ in range(placement.MISSES - 1):
                follower.missed()
            follower.seen(child.pid)
            assert follower.readings == read  # not enough misses: no reading before EVERY
            follower.missed()
            follower.seen(child.pid)
            assert follower.readings == read + 1
        finally:
            follower.end()
    finally:
        child.kill()
        child.wait()
