"""Metrics: names and units as Prometheus wants them, no label that identifies users or items."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from stream.health import Readiness, start_health_server
from stream.metrics import ALLOWED_LABELS, Metrics

REQUIRED = {
    "portrait_events_consumed_total": "counter",
    "portrait_events_dead_lettered_total": "counter",
    "portrait_batch_size": "histogram",
    "portrait_inference_seconds": "histogram",
    "portrait_batch_wait_seconds": "histogram",
    "portrait_end_to_end_latency_seconds": "histogram",
    "portrait_predictions_total": "counter",
    "portrait_mixed_comments_total": "counter",
    "portrait_profile_updates_total": "counter",
    "portrait_model_info": "gauge",
    "portrait_consumer_lag_events": "gauge",
}


@pytest.fixture
def metrics() -> Metrics:
    m = Metrics(CollectorRegistry())
    m.events_consumed.labels(topic="comments.v1").inc(3)
    m.events_dead_lettered.labels(topic="comments.v1", reason="not_json").inc()
    m.duplicates_skipped.labels(topic="comments.v1", reason="offset").inc()
    m.inference_failures.inc()
    m.batch_size.observe(64)
    m.inference_seconds.observe(0.12)
    m.batch_wait_seconds.observe(0.02)
    m.end_to_end_latency_seconds.observe(0.5)
    m.predictions.labels(label="positive").inc()
    m.mixed_comments.inc()
    m.profile_updates.inc()
    m.set_model_info("m1", "CPUExecutionProvider", "cpu", requested_device="auto")
    m.set_consumer_lag({("comments.v1", 0): 10}, {("comments.v1", 0): 7}, ["comments.v1"])
    return m


def _exposed_names(metrics: Metrics) -> dict[str, str]:
    """Exposed family name -> type, as a scrape would see them."""
    names = {}
    for family in metrics.registry.collect():
        name = family.name + "_total" if family.type == "counter" else family.name
        names[name] = family.type
    return names


def test_required_metrics_exist_with_their_types(metrics: Metrics) -> None:
    exposed = _exposed_names(metrics)
    for name, kind in REQUIRED.items():
        assert exposed.get(name) == kind, name


def test_names_follow_conventions(metrics: Metrics) -> None:
    for name, kind in _exposed_names(metrics).items():
        assert name.startswith("portrait_")
        if kind == "counter":
            assert name.endswith("_total"), name
        assert "_ms" not in name and "millis" not in name, name
    text = generate_latest(metrics.registry).decode()
    assert "portrait_inference_seconds_bucket" in text
    assert 'portrait_events_consumed_total{topic="comments.v1"} 3.0' in text


def test_no_label_identifies_a_user_item_or_text(metrics: Metrics) -> None:
    for family in metrics.registry.collect():
        for sample in family.samples:
            labels = set(sample.labels) - {"le"}  # histogram bucket bound
            assert labels <= ALLOWED_LABELS, (family.name, labels)
    assert not ALLOWED_LABELS & {
        "user_id",
        "user",
        "item_id",
        "item",
        "event_id",
        "text",
        "category",
    }


def test_model_info_keeps_only_the_current_model(metrics: Metrics) -> None:
    metrics.set_model_info("m2", "CUDAExecutionProvider", "cuda", requested_device="cuda")
    text = generate_latest(metrics.registry).decode()
    assert (
        'portrait_model_info{device="cuda",model_version="m2",provider="CUDAExecutionProvider",'
        'requested_device="cuda"} 1.0' in text
    )
    assert 'model_version="m1"' not in text


def test_two_instances_on_separate_registries() -> None:
    Metrics(CollectorRegistry())
    Metrics(CollectorRegistry())  # no clash: nothing registers on the global registry


def test_same_registry_twice_is_an_error() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    with pytest.raises(ValueError):
        Metrics(registry)


def test_port_zero_starts_no_server() -> None:
    registry = CollectorRegistry()
    assert start_health_server(0, registry, Readiness(registry)) is None


def test_consumer_lag_is_end_minus_committed_per_topic(metrics: Metrics) -> None:
    end = {("c", 0): 100, ("c", 1): 50, ("b", 0): 9, ("other", 0): 7, ("c", 2): 5}
    committed = {("c", 0): 40, ("c", 1): 50, ("b", 0): 12, ("other", 0): 0}

    lag = metrics.set_consumer_lag(end, committed, ["c", "b", "idle"])

    # ("c", 2) has no committed offset yet; ("b", 0) committed past the end is floored at 0
    assert lag == {"c": 60, "b": 0, "idle": 0}
    text = generate_latest(metrics.registry).decode()
    assert 'portrait_consumer_lag_events{topic="c"} 60.0' in text
    assert 'portrait_consumer_lag_events{topic="idle"} 0.0' in text
    assert 'topic="other"' not in text
