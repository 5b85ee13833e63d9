"""Why a broker does not answer, in one clause per address (no broker needed)."""

from __future__ import annotations

import socket

from stream.kafka_admin import diagnose_bootstrap
from stream.tools.worker_process import free_port


def test_refused_unresolved_and_silent_addresses_are_told_apart() -> None:
    refused = f"127.0.0.1:{free_port()}"
    unresolved = "no-such-broker.invalid:9092"
    with socket.socket() as silent:  # accepts TCP, never speaks Kafka
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        listening = f"127.0.0.1:{silent.getsockname()[1]}"
        reasons = diagnose_bootstrap([refused, unresolved, listening], timeout_s=1).split("; ")
    assert reasons[0] == f"{refused}: connection refused (nothing listens there)"
    assert reasons[1].startswith(f"{unresolved}: name not resolved")
    assert reasons[2].startswith(f"{listening}: TCP connects but no Kafka answer (TLS or SASL")
