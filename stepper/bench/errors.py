"""The one error of the bench package that is not a user error."""

from ..errors import StepperError


class Unmeasurable(StepperError):
    """A figure cannot be measured here; the message is the reason the report shows beside
    its null (e.g. a strategy that does not exist yet, a peer that is not installed)."""
