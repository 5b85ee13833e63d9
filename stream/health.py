"""The worker's HTTP endpoint: Prometheus metrics, liveness and readiness on one port.

- ``GET /metrics``: the Prometheus text format of the worker's registry.
- ``GET /healthz``: 200 ``{"status": "alive"}`` while the process serves (Kubernetes liveness).
- ``GET /readyz``: 200 ``{"status": "ready"}`` once the worker consumes: model loaded, broker
  reached, topics checked, partitions assigned and the table recovered from its changelog, and
  the broker still answering; else 503 ``{"status": "not ready", "reason": ...}`` (``waiting
  for the broker``, ``starting``, ``rebalancing``, ``stopping``, ``broker not reachable (...)``).
  Kubernetes readiness; Compose healthchecks.
- Any other path: 404.

The gauge ``portrait_ready`` (1 ready, 0 not) carries the same state to dashboards and alerts, so
``WorkerDown`` can tell "waiting for the broker" (``portrait_ready`` 0, the target up) from dead
(target down). ``portrait_broker_reachable`` (1 or 0) is the last broker check's result: at
start-up every connection attempt, then a metadata request every
:data:`stream.app_hooks.BROKER_CHECK_INTERVAL_S`; a running worker whose broker stops answering is
not ready (``broker not reachable (<why>)``) until it answers again.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Gauge, make_wsgi_app

__all__ = ["HealthServer", "Readiness", "start_health_server"]

logger = logging.getLogger(__name__)

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class Readiness:
    """The worker's readiness, set by the worker as it starts and rebalances (thread-safe).

    Args:
        registry: Where the ``portrait_ready`` gauge goes.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._lock = threading.Lock()
        self._stage: str | None = "starting"
        self._broker_problem: str | None = None
        self._gauge = Gauge(
            "portrait_ready",
            "1 when the worker consumes (partitions assigned, table recovered, broker "
            "reachable), else 0",
            registry=registry,
        )
        self._broker_gauge = Gauge(
            "portrait_broker_reachable",
            "1 when the last check of the Kafka broker got an answer, else 0",
            registry=registry,
        )

    def not_ready(self, reason: str) -> None:
        """Mark the worker not ready (a stage of its life), with a short reason for ``/readyz``."""
        with self._lock:
            self._update(reason, self._broker_problem)

    def ready(self) -> None:
        """Mark the worker's stage ready (it consumes); ready overall when the broker is too."""
        with self._lock:
            self._update(None, self._broker_problem)

    def broker(self, problem: str | None) -> None:
        """Record the result of a broker check: ``None`` when it answered, else why not (e.g.
        ``127.0.0.1:9092: connection refused``)."""
        with self._lock:
            self._broker_gauge.set(problem is None)
            self._update(self._stage, problem)

    def _update(self, stage: str | None, broker_problem: str | None) -> None:
        before = self._reason_now()
        self._stage, self._broker_problem = stage, broker_problem
        after = self._reason_now()
        if after != before:
            if after is None:
                logger.info("readiness ready=true")
            else:
                logger.info("readiness ready=false reason=%r", after)
        self._gauge.set(after is None)

    def _reason_now(self) -> str | None:
        if self._stage is None and self._broker_problem is not None:
            return f"broker not reachable ({self._broker_problem})"
        return self._stage

    @property
    def reason(self) -> str | None:
        """``None`` when ready, else why not."""
        with self._lock:
            return self._reason_now()


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  # the base's name
        """No access log: Prometheus scrapes every few seconds."""


def _app(registry: CollectorRegistry, readiness: Readiness) -> Callable[..., Iterable[bytes]]:
    metrics = make_wsgi_app(registry)

    def json_reply(start: StartResponse, status: str, body: dict[str, str]) -> list[bytes]:
        start(status, [("Content-Type", "application/json")])
        return [json.dumps(body).encode()]

    def app(environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics(environ, start)  # type: ignore[no-any-return]
        if path == "/healthz":
            return json_reply(start, "200 OK", {"status": "alive"})
        if path == "/readyz":
            reason = readiness.reason
            if reason is None:
                return json_reply(start, "200 OK", {"status": "ready"})
            return json_reply(
                start, "503 Service Unavailable", {"status": "not ready", "reason": reason}
            )
        return json_reply(start, "404 Not Found", {"error": f"no such path {path}"})

    return app


@dataclass
class HealthServer:
    """The running endpoint.

    Attributes:
        port: The TCP port it listens on.
        readiness: What ``/readyz`` reports; the worker updates it.
    """

    port: int
    readiness: Readiness
    _server: _Server
    _thread: threading.Thread

    def close(self) -> None:
        """Stop serving and wait for the server thread to end."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_health_server(
    port: int, registry: CollectorRegistry, readiness: Readiness, addr: str = "0.0.0.0"
) -> HealthServer | None:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``addr:port`` from a daemon thread.

    Args:
        port: TCP port (``PORTRAIT_METRICS_PORT``); 0 = no server.
        registry: The worker's registry.
        readiness: What ``/readyz`` reports (its gauge is on ``registry``).
        addr: Address to bind (default all interfaces, so Prometheus and probes reach it).

    Returns:
        The running server, or ``None`` when ``port`` is 0.

    Raises:
        OSError: The port cannot be bound (e.g. in use).
    """
    if port == 0:
        logger.info("metrics server disabled metrics_port=0")
        return None
    server = make_server(addr, port, _app(registry, readiness), _Server, _QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="portrait-http", daemon=True)
    thread.start()
    logger.info("metrics and health server listening addr=%s port=%s", addr, port)
    return HealthServer(port, readiness, server, thread)
