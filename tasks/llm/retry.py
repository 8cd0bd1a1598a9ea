"""Retries with exponential backoff and full jitter, and a circuit breaker that pauses every
caller during an outage instead of failing the run.

The breaker opens after ``threshold`` consecutive retryable failures (429, 5xx, connection
errors). While open, callers wait; after ``cooldown`` seconds one probe request goes through
(half-open). A probe that succeeds closes it and everyone resumes; one that fails re-opens it
with a doubled cooldown (up to ``max_cooldown``). Only an outage longer than ``max_outage_s``
raises ``OutageError``; finished generations are cached, so a re-run resumes.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


class OutageError(RuntimeError):
    """The backend stayed down longer than the recipe allows."""


@dataclass(frozen=True)
class Backoff:
    base_s: float = 0.5
    cap_s: float = 30.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Full jitter (AWS architecture blog): uniform in [0, min(cap, base * 2^attempt)], so
        many clients retrying at once spread out instead of hammering in lockstep."""
        return rng.uniform(0.0, min(self.cap_s, self.base_s * (2 ** attempt)))


class CircuitBreaker:
    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

    def __init__(self, threshold: int = 5, cooldown_s: float = 2.0, max_cooldown_s: float = 60.0,
                 max_outage_s: float = 3600.0, clock: Callable[[], float] = time.monotonic):
        self.threshold = threshold
        self.base_cooldown = cooldown_s
        self.max_cooldown = max_cooldown_s
        self.max_outage_s = max_outage_s
        self.clock = clock
        self.state = self.CLOSED
        self.failures = 0  # consecutive retryable failures
        self.cooldown = cooldown_s
        self.opened_at = 0.0
        self.outage_started: float | None = None
        self.opened_count = 0  # times it opened (reported)
        self.paused_s = 0.0  # total time callers were held (reported; summed per outage)
        self._probe_out = False
        self._probe_thread: int | None = None
        self._cv = threading.Condition()

    def before_request(self) -> None:
        """Block while the breaker is open; let exactly one probe through when half-open."""
        with self._cv:
            while True:
                if self.state == self.CLOSED:
                    return
                now = self.clock()
                if self.outage_started is not None and \
                        now - self.outage_started > self.max_outage_s:
                    raise OutageError(f"backend down for {now - self.outage_started:.0f}s "
                                      f"(> max_outage_s={self.max_outage_s:.0f})")
                if self.state == self.OPEN and now - self.opened_at >= self.cooldown:
                    self.state = self.HALF_OPEN
                if self.state == self.HALF_OPEN and not self._probe_out:
                    self._probe_out = True
                    self._probe_thread = threading.get_ident()
                    return
                wait = (self.opened_at + self.cooldown - now) if self.state == self.OPEN \
                    else 0.5
                self._cv.wait(timeout=max(0.01, min(wait, 1.0)))

    def record_success(self) -> None:
        with self._cv:
            if self.outage_started is not None:
                self.paused_s += self.clock() - self.outage_started
            self.state = self.CLOSED
            self.failures = 0
            self.cooldown = self.base_cooldown
            self.outage_started = None
            self._probe_out = False
            self._cv.notify_all()

    def record_failure(self) -> None:
        with self._cv:
            self.failures += 1
            now = self.clock()
            if self.state == self.HALF_OPEN and self._probe_thread == threading.get_ident():
                # the probe failed: wait longer next time. (Requests sent before the breaker
                # opened fail late; they must not stretch the pause.)
                self.cooldown = min(self.max_cooldown, self.cooldown * 2)
                self._open(now)
            elif self.state == self.CLOSED and self.failures >= self.threshold:
                self._open(now)
            self._cv.notify_all()

    def release_probe(self) -> None:
        """A probe that ended without telling success or failure (e.g. a 400): let another go."""
        with self._cv:
            if self.state == self.HALF_OPEN and self._probe_thread == threading.get_ident():
                self._probe_out = False
                self._cv.notify_all()

    def _open(self, now: float) -> None:
        if self.state == self.CLOSED:
            self.opened_count += 1
            self.outage_started = now
        self.state = self.OPEN
        self.opened_at = now
        self._probe_out = False
        self._probe_thread = None

    @property
    def healthy(self) -> bool:
        """Closed with fewer failures than would open it: failures now are this request's."""
        return self.state == self.CLOSED and self.failures < self.threshold
