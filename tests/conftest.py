"""Hypothesis profiles for the whole suite.

`ci` (the default) is derandomized, so a CI run is reproducible, and small enough that the
differential suite stays well under two minutes. `long` runs about 100 times as many examples
with fresh randomness, for hunting divergences. Choose with hypothesis' own option
`--hypothesis-profile=long` or with the environment variable STEPPER_HYPOTHESIS_PROFILE=long
(the command-line option wins: hypothesis' pytest plugin loads it after this file).
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=60, derandomize=True, database=None, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "long", max_examples=6000, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("STEPPER_HYPOTHESIS_PROFILE", "ci"))
