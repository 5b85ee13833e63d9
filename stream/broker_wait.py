"""Reaching the broker: the start-up wait with backoff and a running worker's periodic check.

Both use kafka-python's metadata request (:func:`stream.kafka_admin.wait_for_broker`) with its own
logs silenced, and say why the broker does not answer in one clause
(:func:`stream.kafka_admin.diagnose_bootstrap`: refused, name not resolved, timed out, or TLS/SASL).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_never,
    wait_exponential,
)

from models.contract.errors import BrokerUnavailableError
from stream.app import require_bootstrap_servers
from stream.kafka_admin import diagnose_bootstrap, kafka_client_config, wait_for_broker
from stream.settings import Settings

__all__ = [
    "BROKER_CHECK_TIMEOUT_S",
    "check_broker",
    "client_options",
    "wait_for_broker_with_backoff",
]

logger = logging.getLogger(__name__)

_BACKOFF_START_S = 1.0
_BACKOFF_MAX_S = 30.0

BROKER_CHECK_TIMEOUT_S = 3.0
"""Seconds one broker check may take before the broker counts as not reachable."""


def client_options(settings: Settings) -> dict[str, Any]:
    """kafka-python security options, without ``bootstrap_servers``."""
    config: dict[str, Any] = dict(kafka_client_config(settings.kafka))
    config.pop("bootstrap_servers", None)
    return config


@contextmanager
def _client_logs_quiet() -> Iterator[None]:
    """Silence kafka-python while waiting: it logs several lines per failed connection, and the
    wait logs one line per attempt instead."""
    client_logger = logging.getLogger("kafka")
    level = client_logger.level
    client_logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        client_logger.setLevel(level)


def wait_for_broker_with_backoff(
    settings: Settings,
    *,
    attempt_timeout_s: float = 5.0,
    max_attempts: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
    on_result: Callable[[str | None], None] | None = None,
) -> int:
    """Block until the broker answers, retrying with backoff 1, 2, 4 ... 30 s (tenacity).

    Each failed attempt logs one warning line (attempt number, next delay, why).

    Args:
        settings: Settings with bootstrap servers.
        attempt_timeout_s: Seconds one attempt may take.
        max_attempts: Give up after this many attempts; ``None`` = never give up.
        sleep: Sleeps between attempts (injected in tests).
        on_result: Called after every attempt with ``None`` (answered) or why not
            (``Readiness.broker``).

    Returns:
        The number of attempts it took.

    Raises:
        ConfigError: No bootstrap servers are configured.
        BrokerUnavailableError: ``max_attempts`` attempts failed.
    """
    servers = require_bootstrap_servers(settings)
    report = on_result or (lambda problem: None)

    def failed(state: RetryCallState) -> None:
        problem = diagnose_bootstrap(servers)
        report(problem)
        next_s = state.upcoming_sleep
        logger.warning(
            "broker not reachable bootstrap_servers=%s attempt=%d retry_in_s=%.0f reason=%s",
            servers, state.attempt_number, next_s, problem,
        )  # fmt: skip

    retrying = Retrying(
        retry=retry_if_exception_type(BrokerUnavailableError),
        wait=wait_exponential(multiplier=_BACKOFF_START_S, max=_BACKOFF_MAX_S),
        stop=stop_never if max_attempts is None else stop_after_attempt(max_attempts),
        before_sleep=failed,
        sleep=sleep,
        reraise=True,
    )
    for attempt in retrying:
        with attempt, _client_logs_quiet():
            wait_for_broker(servers, timeout_s=attempt_timeout_s, **client_options(settings))
    attempts = retrying.statistics["attempt_number"]
    report(None)
    if attempts > 1:
        logger.info("broker reachable bootstrap_servers=%s attempt=%d", servers, attempts)
    return int(attempts)


def check_broker(settings: Settings, timeout_s: float = BROKER_CHECK_TIMEOUT_S) -> str | None:
    """One check of a running worker's broker: ``None`` when it answers a metadata request
    within ``timeout_s``, else why not (:func:`stream.kafka_admin.diagnose_bootstrap`, or
    ``no answer`` when it accepts connections but does not answer)."""
    servers = require_bootstrap_servers(settings)
    try:
        with _client_logs_quiet():
            wait_for_broker(servers, timeout_s=timeout_s, **client_options(settings))
    except BrokerUnavailableError:
        return diagnose_bootstrap(servers, timeout_s=min(timeout_s, 2.0)) or "no answer"
    return None
