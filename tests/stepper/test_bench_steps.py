"""The instruction-step benchmark's building blocks (stepper.bench.steps) run: the workload,
its C PTRACE_SINGLESTEP peer and the emulated stepper. No timing is asserted; the share of
emulated steps is what the workload is for (a mix that emulate_one covers)."""

from __future__ import annotations

import shutil

import pytest

from stepper.bench import steps

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc builds the workload")


def test_the_c_singlestep_loop_times_the_steps_asked_for():
    assert steps.c_singlestep_us(500) > 0


def test_the_emulated_stepper_emulates_nearly_every_step_of_the_workload():
    us, share = steps.emulated_us(3000)
    assert us > 0
    assert share > 0.99  # its bench form leaves out the bsf, which goes to the CPU


def test_steps_per_second_calls_the_step_warmup_plus_steps_times():
    calls = []
    rate = steps.steps_per_second(lambda: calls.append(1), 50, warmup=7)
    assert len(calls) == 57 and rate > 0
