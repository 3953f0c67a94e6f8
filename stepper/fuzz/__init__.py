"""Differential fuzzing of the emulator (`stepper fuzz`, docs/fuzz.md).

One module per concern: `cases` (where cases come from: a pure function of seed and index),
`judge` (run the emulator and the Unicorn oracle, compare), `native` (the real-CPU oracle and
its sandbox tracee), `shrink` (minimise a divergent case), `regressions` (the JSON files in
corpus/regressions/ and their replay), `runner` (chunks, worker processes, the campaign) and
`cluster` (the same chunks on a Dask distributed cluster).

    >>> from stepper.fuzz import runner
    >>> report = runner.run(runner.Config(cases=64, seed=1, workers=1, regressions_dir=None))
    >>> report.cases, report.divergences
    (64, 0)
"""

import importlib.util

from ..errors import StepperError

_EXTRA = ("unicorn", "keystone", "hypothesis")
_missing = [name for name in _EXTRA if importlib.util.find_spec(name) is None]
if _missing:
    raise StepperError(f"stepper fuzz needs {', '.join(_missing)}: pip install 'stepper[fuzz]'")

from .runner import Config, Report, run  # noqa: E402  (after the check that names the extra)

__all__ = ["Config", "Report", "run"]
