"""Talking to any Kafka-protocol broker as a client: connection options, reachability, topics.

Used by the demo, the replay and profiles commands and the integration tests (kafka-python >= 3.0).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterable, Mapping
from typing import Any

from models.contract.errors import BrokerUnavailableError
from stream.settings import KafkaSettings

__all__ = [
    "create_topics",
    "describe_topic_configs",
    "diagnose_bootstrap",
    "kafka_client_config",
    "wait_for_broker",
]

logger = logging.getLogger(__name__)


def kafka_client_config(kafka: KafkaSettings) -> dict[str, Any]:
    """kafka-python keyword arguments for the connection settings (security passed through).

    Args:
        kafka: the ``kafka`` part of :class:`stream.settings.Settings`.

    Returns:
        ``bootstrap_servers`` (a list of ``host:port``), ``security_protocol`` and, when set, the
        SASL and SSL options, ready to pass to ``KafkaProducer``, ``KafkaConsumer`` or
        ``KafkaAdminClient``.
    """
    config: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_list,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.sasl_mechanism:
        config["sasl_mechanism"] = kafka.sasl_mechanism
    if kafka.sasl_username:
        config["sasl_plain_username"] = kafka.sasl_username
    if kafka.sasl_password is not None:
        config["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    if kafka.ssl_cafile is not None:
        config["ssl_cafile"] = str(kafka.ssl_cafile)
    return config


def _admin(bootstrap_servers: str | list[str], timeout_s: float, extra: Mapping[str, Any]) -> Any:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    timeout_ms = max(1, int(timeout_s * 1000))
    try:
        return KafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=timeout_ms,
                                bootstrap_timeout_ms=timeout_ms, **extra)  # fmt: skip
    except KafkaError as exc:
        raise BrokerUnavailableError(
            f"cannot reach the Kafka broker at {bootstrap_servers}: {exc}; check "
            f"PORTRAIT_KAFKA__BOOTSTRAP_SERVERS and that the broker is running"
        ) from exc


def wait_for_broker(
    bootstrap_servers: str | list[str], timeout_s: float = 30.0, **client_config: Any
) -> None:
    """Block until the broker answers a metadata request, retrying with backoff.

    Args:
        bootstrap_servers: ``"host:port[,host:port]"`` or a list of ``host:port``.
        timeout_s: total seconds to keep trying.
        **client_config: extra kafka-python options (security), e.g. from
            :func:`kafka_client_config`.

    Raises:
        BrokerUnavailableError: no answer within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    backoff_s = 0.1
    while True:
        remaining_s = deadline - time.monotonic()
        try:
            admin = _admin(bootstrap_servers, max(0.5, min(remaining_s, 5.0)), client_config)
        except BrokerUnavailableError:
            if time.monotonic() + backoff_s >= deadline:
                raise
            time.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, 2.0)
            continue
        try:
            admin.list_topics()
            return
        finally:
            admin.close()


def create_topics(
    bootstrap_servers: str | list[str],
    names: Iterable[str],
    partitions: int,
    replication_factor: int = 1,
    configs: Mapping[str, str] | None = None,
    *,
    timeout_s: float = 30.0,
    **client_config: Any,
) -> list[str]:
    """Create topics that do not exist yet; topics that exist are left as they are.

    Args:
        bootstrap_servers: ``"host:port[,host:port]"`` or a list of ``host:port``.
        names: topic names.
        partitions: partitions per new topic (>= 1).
        replication_factor: replicas per partition (1 for a single local broker).
        configs: topic configs applied to every new topic, e.g. ``{"retention.ms": "-1"}``.
        timeout_s: seconds for connecting and for the request.
        **client_config: extra kafka-python options (security), e.g. from
            :func:`kafka_client_config`.

    Returns:
        The names that were created by this call, in input order.

    Raises:
        ValueError: ``partitions`` or ``replication_factor`` is below 1.
        BrokerUnavailableError: the broker cannot be reached, or refused to create a topic for a
            reason other than "already exists" (the message says which topic and why).
    """
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError, for_code

    if partitions < 1 or replication_factor < 1:
        raise ValueError(f"partitions and replication_factor must be >= 1 "
                         f"(got {partitions}, {replication_factor})")  # fmt: skip
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return []
    new = [NewTopic(n, partitions, replication_factor, topic_configs=dict(configs or {}))
           for n in wanted]  # fmt: skip
    admin = _admin(bootstrap_servers, timeout_s, client_config)
    try:
        response = admin.create_topics(new, timeout_ms=int(timeout_s * 1000), raise_errors=False)
    except KafkaError as exc:
        raise BrokerUnavailableError(f"creating topics {wanted} failed: {exc}") from exc
    finally:
        admin.close()
    created = []
    for result in response["topics"]:
        code = int(result["error_code"])
        error = for_code(code) if code else None
        if error is None:
            created.append(result["name"])
        elif error is not TopicAlreadyExistsError:
            raise BrokerUnavailableError(
                f"creating topic {result['name']!r} failed: {error.__name__}: "
                f"{result.get('error_message') or ''}"
            )
    logger.info("topics ready created=%s existing=%s", created,
                [n for n in wanted if n not in created])  # fmt: skip
    return [n for n in wanted if n in created]


def describe_topic_configs(
    bootstrap_servers: str | list[str], topic: str, *, timeout_s: float = 30.0, **client_config: Any
) -> dict[str, str]:
    """A topic's configs as the broker reports them (``DescribeConfigs``).

    Returns:
        Config name -> value; empty when the broker reports none.

    Raises:
        BrokerUnavailableError: the broker cannot be reached or the request failed.
    """
    from kafka.admin import ConfigResource, ConfigResourceType
    from kafka.errors import KafkaError

    admin = _admin(bootstrap_servers, timeout_s, client_config)
    try:
        answer = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    except KafkaError as exc:
        raise BrokerUnavailableError(f"describe configs of {topic} failed: {exc}") from exc
    finally:
        admin.close()
    return _config_values(answer, topic)


def _config_values(answer: Any, topic: str) -> dict[str, str]:
    """The name -> value pairs of ``topic`` in kafka-python's describe_configs answer (a dict
    ``{"topic": {name: {config: value | entry}}}`` in kafka-python 3)."""
    found = answer.get("topic", {}).get(topic, {}) if isinstance(answer, dict) else {}
    values: dict[str, str] = {}
    for name, entry in dict(found).items():
        value = entry.get("value") if isinstance(entry, dict) else entry
        if value is not None:
            values[str(name)] = str(value)
    return values


def diagnose_bootstrap(servers: list[str], timeout_s: float = 2.0) -> str:
    """Why the brokers at ``servers`` do not answer, one short clause per address.

    Name resolution first (``name not resolved``), then a TCP connection (``connection refused``,
    ``timed out``); an address that accepts TCP but gave no Kafka answer points at the protocol
    settings (TLS or SASL: ``PORTRAIT_KAFKA__SECURITY_PROTOCOL`` and the ``SASL_*`` settings).

    Args:
        servers: ``host:port`` strings (``[v6]:port`` accepted).
        timeout_s: Seconds for each connection attempt.
    """
    reasons = []
    for server in servers:
        host, _, port_text = server.rpartition(":")
        host = host.strip("[]")
        try:
            port = int(port_text)
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (ValueError, socket.gaierror) as exc:
            reasons.append(f"{server}: name not resolved ({getattr(exc, 'strerror', exc)})")
            continue
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                reasons.append(
                    f"{server}: TCP connects but no Kafka answer (TLS or SASL settings: "
                    "PORTRAIT_KAFKA__SECURITY_PROTOCOL, PORTRAIT_KAFKA__SASL_*; or the broker "
                    "hangs)"
                )
        except ConnectionRefusedError:
            reasons.append(f"{server}: connection refused (nothing listens there)")
        except TimeoutError:
            reasons.append(f"{server}: timed out after {timeout_s:.0f} s")
        except OSError as exc:
            reasons.append(f"{server}: {exc.strerror or exc}")
    return "; ".join(reasons)
