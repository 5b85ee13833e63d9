"""Repeated log lines under load are collapsed into one line with a count."""

from __future__ import annotations

import logging

import pytest

from stream.logs import RATE_LIMITED_LOGGERS, RepeatFilter, rate_limit_noisy_loggers


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _record(message: str, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord("faust.transport.producer", level, __file__, 1, message, None, None)


def test_first_line_passes_repeats_are_held_then_counted() -> None:
    clock = FakeClock()
    limiter = RepeatFilter(interval_s=60, clock=clock)
    passed = [limiter.filter(_record(f"producer buffer full size {n}")) for n in range(1000)]
    assert passed.count(True) == 1 and passed[0]
    clock.now = 61.0
    record = _record("producer buffer full size 7")
    assert limiter.filter(record)
    assert (
        record.getMessage() == "producer buffer full size 7 (repeated 999 times in the last 61 s)"
    )


def test_other_kinds_and_levels_are_not_held_back() -> None:
    limiter = RepeatFilter(interval_s=60, clock=FakeClock())
    assert limiter.filter(_record("producer buffer full size 1"))
    assert limiter.filter(_record("producer flush took 0.25", logging.INFO))
    assert limiter.filter(_record("producer buffer full size 2", logging.ERROR))
    assert not limiter.filter(_record("producer flush took 1.5", logging.INFO))


def test_the_worker_rate_limits_fausts_producer_logger(caplog: pytest.LogCaptureFixture) -> None:
    rate_limit_noisy_loggers()
    rate_limit_noisy_loggers()  # idempotent: one filter
    producer = logging.getLogger(RATE_LIMITED_LOGGERS[0])
    assert sum(isinstance(f, RepeatFilter) for f in producer.filters) == 1
    with caplog.at_level(logging.INFO, logger=producer.name):
        for n in range(500):
            producer.warning("producer buffer full size %d", n)
    assert len([r for r in caplog.records if "buffer full" in r.getMessage()]) == 1


def test_aiokafka_connection_errors_while_the_broker_is_down_collapse_into_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rate_limit_noisy_loggers()
    client = logging.getLogger("aiokafka.client")  # what a worker logged 2,454 times in 36 s
    with caplog.at_level(logging.INFO, logger=client.name):
        for n in range(2454):
            client.error("Unable connect to node with id %d: [Errno 111] Connect call failed "
                         "('127.0.0.1', 19092)", 111 + n % 3)  # fmt: skip
    assert len([r for r in caplog.records if r.name == "aiokafka.client"]) == 1
