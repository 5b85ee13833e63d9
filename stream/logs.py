"""Log lines that repeat under load, collapsed into one line with a count.

faust's producer logs ``producer buffer full size N`` (warning) and ``producer flush took S``
(info) on every full buffer: measured here, 100,000 behaviour events of distinct users wrote
1,278 of each. :class:`RepeatFilter` lets the first line of a kind through, holds back the repeats
for ``interval_s`` seconds, then lets the next one through with ``(repeated K times in the last
T s)`` appended. Lines differ only in their numbers count as one kind. aiokafka's connection
errors while the broker is down are collapsed the same way.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

__all__ = ["RATE_LIMITED_LOGGERS", "RepeatFilter", "rate_limit_noisy_loggers"]

RATE_LIMITED_LOGGERS = (
    "faust.transport.producer",
    "aiokafka.client", "aiokafka.conn", "aiokafka.consumer.fetcher",
    "aiokafka.consumer.group_coordinator", "aiokafka.producer.sender",
)  # fmt: skip
"""Loggers whose lines repeat: faust's once per full producer buffer; aiokafka's several times a
second while the broker is down (measured: 2,454 error lines in 36 s, "Unable connect to node",
"Unable to update metadata", "Failed fetch messages")."""

_NUMBERS = re.compile(r"\d+(?:\.\d+)?(?:e-?\d+)?")


class RepeatFilter(logging.Filter):
    """Pass the first record of a kind, then at most one per ``interval_s`` with a repeat count.

    Args:
        interval_s: Seconds between two records of the same kind (default 60).
        clock: Monotonic seconds (tests pass a fake).
    """

    def __init__(
        self, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._interval_s = interval_s
        self._clock = clock
        self._last: dict[tuple[str, int, str], float] = {}
        self._held: dict[tuple[str, int, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """True to emit ``record`` (its message then carries the count of held-back repeats)."""
        kind = (record.name, record.levelno, _NUMBERS.sub("#", record.getMessage()))
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval_s:
            self._held[kind] = self._held.get(kind, 0) + 1
            return False
        held = self._held.pop(kind, 0)
        if held and last is not None:
            window = f"{now - last:.0f}"
            record.msg = f"{record.getMessage()} (repeated {held} times in the last {window} s)"
            record.args = None
        self._last[kind] = now
        return True


def rate_limit_noisy_loggers(interval_s: float = 60.0) -> None:
    """Install a :class:`RepeatFilter` on each of :data:`RATE_LIMITED_LOGGERS` (idempotent)."""
    for name in RATE_LIMITED_LOGGERS:
        target = logging.getLogger(name)
        if not any(isinstance(f, RepeatFilter) for f in target.filters):
            target.addFilter(RepeatFilter(interval_s))
