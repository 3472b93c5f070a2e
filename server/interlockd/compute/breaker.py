"""A circuit breaker per compute provider: stop sending runs to one that keeps failing.

Closed, it lets every call through and counts consecutive failures (of health
probes and of session starts); ``failures`` in a row open it. Open, it refuses
for ``cooldown_seconds``, then lets one trial call through (half-open): a
success closes it, a failure opens it for another cooldown. The clock is
injected so tests can move time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Consecutive-failure breaker with a cooldown and a single trial call."""

    def __init__(
        self,
        *,
        failures: int = 3,
        cooldown_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1:
            raise ValueError(f"failures: must be at least 1, got {failures}")
        self._threshold = failures
        self._cooldown = cooldown_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial = False
        self.last_error = ""

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self._cooldown:
            return "half_open"
        return "open"

    def available(self) -> bool:
        """Whether a call may go through now (without claiming the half-open trial)."""
        state = self.state
        return state == "closed" or (state == "half_open" and not self._trial)

    def claim(self) -> bool:
        """Take the right to make a call: always when closed, once per cooldown when
        half-open (the trial), never when open."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._trial:
            self._trial = True
            return True
        return False

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial = False
        self.last_error = ""

    def failure(self, error: str = "") -> None:
        self._failures += 1
        self.last_error = error
        if self._opened_at is not None or self._failures >= self._threshold:
            self._opened_at = self._clock()  # (re)open: a failed trial waits a new cooldown
        self._trial = False
