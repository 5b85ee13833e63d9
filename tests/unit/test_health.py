"""The worker's HTTP endpoint: /metrics, /healthz, /readyz, 404 elsewhere; readiness before the
broker is reached."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client import CollectorRegistry

from stream.health import Readiness, start_health_server
from stream.tools.worker_process import free_port


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_routes_and_readiness_states() -> None:
    registry = CollectorRegistry()
    readiness = Readiness(registry)
    server = start_health_server(free_port(), registry, readiness, addr="127.0.0.1")
    assert server is not None
    try:
        assert get(server.port, "/healthz") == (200, '{"status": "alive"}')
        status, body = get(server.port, "/readyz")
        assert status == 503 and json.loads(body) == {"status": "not ready", "reason": "starting"}
        assert "portrait_ready 0.0" in get(server.port, "/metrics")[1]
        readiness.ready()
        assert get(server.port, "/readyz") == (200, '{"status": "ready"}')
        assert "portrait_ready 1.0" in get(server.port, "/metrics")[1]
        readiness.not_ready("rebalancing")
        assert json.loads(get(server.port, "/readyz")[1])["reason"] == "rebalancing"
        assert get(server.port, "/")[0] == 404
        assert get(server.port, "/metrics/extra")[0] == 404
    finally:
        server.close()


def test_worker_waiting_for_the_broker_is_alive_but_not_ready(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    port = free_port()
    env = {**os.environ, "PORTRAIT_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9",
           "PORTRAIT_MODEL__PATH": str(tiny_model_dir), "PORTRAIT_METRICS_PORT": str(port),
           "PORTRAIT_STATE_DIR": str(tmp_path / "state")}  # fmt: skip
    worker = subprocess.Popen(
        [sys.executable, "-c", "from stream.tools.cli import main; main()", "worker"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline, ready = time.monotonic() + 60, None
        while time.monotonic() < deadline and ready is None:
            try:
                ready = get(port, "/readyz")
            except OSError:  # not listening yet
                time.sleep(0.2)
        assert ready is not None, "the endpoint never came up"
        assert ready[0] == 503
        assert json.loads(ready[1]) == {"status": "not ready", "reason": "waiting for the broker"}
        assert get(port, "/healthz")[0] == 200
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def test_a_broker_that_stops_answering_makes_a_ready_worker_not_ready() -> None:
    registry = CollectorRegistry()
    readiness = Readiness(registry)

    def gauges() -> tuple[float | None, float | None]:
        return (registry.get_sample_value("portrait_ready"),
                registry.get_sample_value("portrait_broker_reachable"))  # fmt: skip

    readiness.broker(None)
    readiness.ready()
    assert readiness.reason is None and gauges() == (1.0, 1.0)
    readiness.broker("127.0.0.1:9092: connection refused")
    assert readiness.reason == "broker not reachable (127.0.0.1:9092: connection refused)"
    assert gauges() == (0.0, 0.0)
    readiness.not_ready("rebalancing")  # a stage's own reason comes first
    assert readiness.reason == "rebalancing"
    readiness.ready()
    readiness.broker(None)
    assert readiness.reason is None and gauges() == (1.0, 1.0)
