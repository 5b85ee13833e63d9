"""Integration-test fixtures: a real local Kafka-protocol broker and unique names.

The ``broker`` fixture starts one embedded Tansu broker per test session (in-memory storage), or
uses the broker named by the environment variable ``PORTRAIT_TEST_BOOTSTRAP`` (``host:port``) when
it is set, e.g. a real Apache Kafka in CI. Every test under ``tests/integration/`` is marked
``integration`` automatically, so ``pytest -m "not integration"`` runs without a broker.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stream.tools.broker import EmbeddedBroker, wait_for_broker

_HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class ExternalBroker:
    """A broker this test session did not start (``PORTRAIT_TEST_BOOTSTRAP``); cannot be paused."""

    bootstrap_servers: str


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test collected from this directory with ``pytest.mark.integration``."""
    for item in items:
        if _HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker | ExternalBroker]:
    """The session's broker: ``PORTRAIT_TEST_BOOTSTRAP`` if set, else an embedded Tansu broker.

    Tests that need :meth:`EmbeddedBroker.pause` should skip (with a reason) on an
    :class:`ExternalBroker`.
    """
    external = os.environ.get("PORTRAIT_TEST_BOOTSTRAP", "").strip()
    if external:
        wait_for_broker(external, timeout_s=30.0)
        yield ExternalBroker(external)
        return
    embedded = EmbeddedBroker()
    embedded.start()
    try:
        yield embedded
    finally:
        embedded.stop()
        embedded.remove_logs()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """A factory of names unique to this test run, for topics and consumer groups.

    ``unique_name("comments")`` -> ``"comments-test-round-trip-1a2b3c4d"``: the prefix, the test's
    name (Kafka-legal characters only, shortened) and 8 random hex digits.
    """
    test = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name).strip("-")[:60]

    def make(prefix: str = "t") -> str:
        return f"{prefix}-{test}-{uuid.uuid4().hex[:8]}"

    return make
