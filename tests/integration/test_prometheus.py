"""The dashboard and the alert rules against a real Prometheus scraping a real worker.

A Prometheus server (Debian's ``prometheus`` package, on loopback, its own config and storage in a
temporary directory, scrape interval 1 s) scrapes ``portrait worker`` while it processes real
comments (the held-out test texts, simulated users) and a few malformed events from the local
broker. Then every PromQL query of ops/grafana/dashboards/portrait.json is evaluated through the
HTTP API (``/api/v1/query``) with Grafana's variables substituted: each must parse and return
data. The alert rules are loaded from ops/prometheus/alerts.yml and must evaluate without error;
``promtool`` checks the config and the rules and runs the rule unit tests
(ops/prometheus/alerts.test.yml).

Without the ``prometheus`` binary the tests skip, except in CI (``CI`` set), where they fail:
.ci/run installs the package.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from reliability_kit import wait_until
from reliability_kit import worker_settings as kit_settings

from stream.model_registry import Registry
from stream.publish import ReplayRecord, make_producer, publish
from stream.settings import Settings
from stream.tools.replay import records_from_events
from stream.tools.simulate import load_test_texts, simulate
from stream.tools.worker_process import WorkerProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
OPS = ROOT / "ops"
DASHBOARD = OPS / "grafana" / "dashboards" / "portrait.json"
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$job": "portrait", "$instance": ".*"}
"""What Grafana substitutes into the panel queries: all workers, a 1-minute rate window."""
MALFORMED = (b"this is not json", b'{"event_id": "bad", "text": "no user id", "event_time": 1}')
WAVES = 4


def _binaries() -> tuple[str, str]:
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if prometheus and promtool:
        return prometheus, promtool
    message = "the prometheus and promtool binaries are needed (apt-get install prometheus)"
    if os.environ.get("CI"):
        pytest.fail(message + "; .ci/run installs them")
    pytest.skip(message)


@pytest.fixture(scope="module")
def binaries() -> tuple[str, str]:
    return _binaries()


class PrometheusServer:
    """A Prometheus process on 127.0.0.1 with a config derived from ops/prometheus/prometheus.yml.

    The ``portrait`` job keeps its name and rule files but scrapes ``metrics_port`` every second
    (the compose file's DNS discovery is replaced by a static target).
    """

    def __init__(self, binary: str, workdir: Path, metrics_port: int) -> None:
        self.port = free_port()
        config = yaml.safe_load((OPS / "prometheus" / "prometheus.yml").read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = [str(OPS / "prometheus" / name) for name in config["rule_files"]]
        targets = {"portrait": f"127.0.0.1:{metrics_port}", "prometheus": f"127.0.0.1:{self.port}"}
        config["scrape_configs"] = [
            {
                "job_name": job["job_name"],
                "static_configs": [{"targets": [targets[job["job_name"]]]}],
            }
            for job in config["scrape_configs"]
        ]
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "prometheus.log"
        command = [binary, f"--config.file={self.config_path}",
                   f"--storage.tsdb.path={workdir / 'data'}",
                   f"--web.listen-address=127.0.0.1:{self.port}"]  # fmt: skip
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def get(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>`` and return the decoded ``data``; raise if not ``success``."""
        query = urllib.parse.urlencode(params)
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:  # a bad query answers 400 with a JSON error
            body = json.load(exc)
        assert body["status"] == "success", (url, body)
        return body["data"]

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("prometheus not ready:\n" + self.log_path.read_text()[-3000:])

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def test_promtool_accepts_the_config_and_the_rules_and_their_unit_tests(
    binaries: tuple[str, str],
) -> None:
    _, promtool = binaries
    for command in (["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"],
                    ["test", "rules", "alerts.test.yml"]):  # fmt: skip
        done = subprocess.run([promtool, *command], cwd=OPS / "prometheus", capture_output=True,
                              text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, (command, done.stdout, done.stderr)


@pytest.fixture
def worker_settings(
    broker: Any,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    tiny_model_dir: Path,
    named_tiny_model: Callable[..., Path],
) -> Settings:
    segments = tmp_path / "segments.json"  # so that the segment panels have data
    commenter = {"name": "commenter", "description": "wrote a comment",
                 "enter": "profile.comment_count >= 1"}  # fmt: skip
    segments.write_text(json.dumps({"segments": [commenter]}))
    registry = Registry(tmp_path / "registry")  # a live model and a candidate in shadow
    registry.stage(named_tiny_model("live-1"))
    registry.promote()
    registry.stage(named_tiny_model("candidate-1"))
    return kit_settings(broker.bootstrap_servers, unique_name, tmp_path / "state", tiny_model_dir,
                        batch={"max_batch_size": 16, "max_wait_s": 0.1},
                        segments={"path": segments},
                        model={"path": None, "registry": registry.root},
                        topics={"segment_events": unique_name("segments")})  # fmt: skip


@pytest.fixture
def running(binaries: tuple[str, str], worker_settings: Settings,
            tmp_path: Path) -> Iterator[tuple[WorkerProcess, PrometheusServer]]:  # fmt: skip
    worker = WorkerProcess(worker_settings, tmp_path / "worker.log")
    prometheus = PrometheusServer(binaries[0], tmp_path, worker_settings.metrics_port)
    try:
        worker.start()
        prometheus.wait_ready()
        worker.wait_ready(timeout_s=120)
        yield worker, prometheus
    finally:
        prometheus.stop()
        worker.stop()


def _records(settings: Settings) -> list[ReplayRecord]:
    """Real held-out comments from 6 simulated users, behaviour events, and malformed comments."""
    population = simulate(load_test_texts(), users=6, comments_per_user=4, seed=11)
    good = list(records_from_events(population.events, settings.topics))
    bad = [ReplayRecord(0, settings.topics.comments, b"u-bad", value) for value in MALFORMED]
    return good + bad * WAVES


def _produce_in_waves(settings: Settings, records: list[ReplayRecord]) -> int:
    """Send in WAVES parts 2 s apart, so Prometheus sees the counters rise between scrapes."""
    producer = make_producer(settings)
    sent = 0
    try:
        for wave in range(WAVES):
            report = publish(records[wave::WAVES], producer, progress=False)
            assert report.failed == 0
            sent += report.produced
            time.sleep(2.0)
    finally:
        producer.close()
    return sent


def _panel_queries() -> list[tuple[str, str, str]]:
    """(panel title, legend, PromQL with Grafana's variables substituted) for every target."""
    queries = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, expr
            queries.append((panel["title"], target.get("legendFormat", ""), expr))
    return queries


def test_every_dashboard_query_returns_data_and_every_alert_rule_evaluates(
    running: tuple[WorkerProcess, PrometheusServer], worker_settings: Settings
) -> None:
    worker, prometheus = running
    sent = _produce_in_waves(worker_settings, _records(worker_settings))

    def consumed_in_prometheus() -> bool:
        worker.check_alive()
        result = prometheus.get("query", query="sum(portrait_events_consumed_total)")["result"]
        return bool(result) and float(result[0]["value"][1]) >= sent

    wait_until(consumed_in_prometheus, 120, f"Prometheus to see {sent} events consumed", 0.5)

    def lag_scraped() -> bool:
        return bool(prometheus.get("query", query="portrait_consumer_lag_events")["result"])

    wait_until(lag_scraped, 30, "the consumer-lag gauge", 0.5)
    time.sleep(3.0)  # a few more scrapes and rule evaluations after the last change

    lines, empty, not_finite = [], [], []
    for title, legend, expr in _panel_queries():
        result = prometheus.get("query", query=expr)["result"]
        values = [float(series["value"][1]) for series in result]
        lines.append(f"{title} [{legend}]: {len(result)} series, values {values}\n    {expr}")
        if not result:
            empty.append(title)
        elif expr.startswith("histogram_quantile") and not any(map(math.isfinite, values)):
            not_finite.append(title)
    print("\nDashboard queries against Prometheus:\n" + "\n".join(lines))
    assert empty == [], empty
    assert not_finite == [], not_finite

    rules = [rule for group in prometheus.get("rules")["groups"] for rule in group["rules"]]
    print("Alert rules: " + ", ".join(f"{r['name']}={r['health']}/{r['state']}" for r in rules))
    assert {rule["name"] for rule in rules} >= {"PortraitWorkerDown", "PortraitConsumerLagGrowing"}
    assert all(rule["health"] == "ok" and not rule.get("lastError") for rule in rules), rules
    # The replayed events are from 2024 (latency = their age) and 25% of the comments are
    # malformed: those two rules are true on this data (pending: their `for` has not elapsed).
    true_now = {"PortraitEndToEndLatencyHigh", "PortraitDeadLetterRateHigh"}
    states = {rule["name"]: rule["state"] for rule in rules}
    assert states == {name: "pending" if name in true_now else "inactive" for name in states}
