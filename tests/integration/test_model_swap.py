"""Hot swap on the local broker: two workers follow the registry's live model under load.

Two copies of the tiny model are registered as ``m1`` and ``m2`` (same weights, so the offline
reference is one model, while every verdict still names the version that scored it). With ``m1``
live, ``m2`` staged and events flowing, both workers score ``m2`` in shadow (``portrait model
report`` sums their metrics: full agreement); then ``portrait model promote`` makes ``m2`` live:
both workers swap between micro-batches (``portrait_model_info`` follows), one is killed with
SIGKILL right after the promotion and restarted, and the profiles must still equal the offline
reference exactly, with later verdicts by ``m2``. ``portrait model rollback`` then brings both
back to ``m1``. A candidate with NaN outputs is refused at staging; a model whose files break
after staging fails to load when promoted, and both workers go on serving ``m1``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from reliability_kit import (
    BackgroundProducer,
    assert_profiles_match,
    caught_up,
    consumed,
    create_source_topics,
    kill9,
    offline_profiles,
    peer_settings,
    produce,
    read_topic,
    scrape,
    seeded_events,
    start_worker,
    wait_until,
    worker_settings,
)

from stream.settings import Settings

PORTRAIT = str(Path(sys.executable).with_name("portrait"))
USERS, EVENTS = 120, 900
AFTER_PROMOTION = 600
"""Events sent before the promotion; the rest are sent after it."""


def _cli(registry: Path, *args: str, returncode: int = 0) -> str:
    """``portrait model ARGS``: its stdout, or its stderr when ``returncode`` is not 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTRAIT_")}
    done = subprocess.run([PORTRAIT, "model", *args, "--registry", str(registry)], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == returncode, done.stderr
    return done.stdout if returncode == 0 else done.stderr


def _serving(settings: Settings) -> set[str]:
    samples = scrape(settings.metrics_port)
    return {dict(labels)["model_version"] for (name, labels), value in samples.items()
            if name == "portrait_model_info" and value == 1}  # fmt: skip


def _shadowed(settings: Settings) -> float:
    samples = scrape(settings.metrics_port)
    return samples.get(("portrait_shadow_events_total", (("candidate", "m2"),)), 0.0)


def _as_one_model(updates: list[Any], versions: set[str], seen: set[str]) -> list[Any]:
    """The updates with every verdict's model version renamed to ``m1`` (the reference's), after
    checking it is one of ``versions``; the versions found are added to ``seen``."""
    out = []
    for record in updates:
        value = record.value
        if value is not None:
            update = json.loads(value)
            for comment in update["profile"]["recent_comments"]:
                assert comment["model_version"] in versions
                seen.add(comment["model_version"])
                comment["model_version"] = "m1"
            value = json.dumps(update).encode()
        out.append(SimpleNamespace(key=record.key, value=value))
    return out


def test_promote_swaps_both_workers_under_load_and_rollback_returns(
    broker: Any,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    tiny_model_dir: Path,
    named_tiny_model: Callable[..., Path],
    nan_tiny_model: Callable[[str], Path],
) -> None:
    bootstrap = broker.bootstrap_servers
    registry = tmp_path / "registry"
    _cli(registry, "stage", str(named_tiny_model("m1")))
    _cli(registry, "promote")
    _cli(registry, "stage", str(named_tiny_model("m2")))
    settings = worker_settings(bootstrap, unique_name, tmp_path / "w1", tiny_model_dir,
                               model={"path": None, "registry": registry})  # fmt: skip
    create_source_topics(settings)
    second = peer_settings(settings, tmp_path / "w2")
    workers = [start_worker(settings, tmp_path / "w1.log"),
               start_worker(second, tmp_path / "w2.log")]  # fmt: skip
    try:
        assert _serving(settings) == _serving(second) == {"m1"}
        events = seeded_events(settings, 11, USERS, EVENTS)
        producer = BackgroundProducer(bootstrap, events[:AFTER_PROMOTION], pace_s=0.15)
        producer.start()
        wait_until(lambda: consumed(workers[0]) + consumed(workers[1]) >= EVENTS // 3, 90,
                   "a third of the events consumed")  # fmt: skip
        # the staged m2 scores in shadow on both workers; its verdicts touch no profile
        wait_until(lambda: all(_shadowed(s) > 0 for s in (settings, second)), 30,
                   "shadow scores of m2 on both workers")  # fmt: skip
        urls = [f"--metrics=http://127.0.0.1:{s.metrics_port}/metrics" for s in (settings, second)]
        report = json.loads(_cli(registry, "report", "--no-corrections", *urls))
        assert report["candidate"] == "m2" and report["workers"] == 2
        assert report["shadow"]["events"] > 0 and report["shadow"]["failures"] == 0
        assert report["shadow"]["agreement"] == 1.0  # the same weights under another name
        _cli(registry, "promote")  # m2 live, under load
        wait_until(lambda: _serving(settings) == {"m2"}, 30, "worker 1 to swap to m2")
        sent = producer.result()  # (whether it was still sending depends on the machine's speed)
        producer = BackgroundProducer(bootstrap, events[AFTER_PROMOTION:], pace_s=0.15)
        producer.start()  # the rest, after the promotion: some verdicts are m2's for sure
        kill9(workers[1])  # in the middle of its swap, or just after it, under load
        workers[1] = start_worker(second, tmp_path / "w2.log")
        assert _serving(second) == {"m2"}  # a restarted worker loads the live model
        sent += producer.result()
        expected = offline_profiles(sent, registry / "models" / "m1")
        updates = read_topic(bootstrap, settings.topics.profile_updates, caught_up(expected), 120)
        seen: set[str] = set()
        assert_profiles_match(_as_one_model(updates, {"m1", "m2"}, seen), expected)  # exact
        assert seen == {"m1", "m2"}  # verdicts of both models, each named
        newest = max(
            (json.loads(r.value) for r in updates if r.value),
            key=lambda update: update["updated_at"],
        )  # records interleave partitions
        assert newest["model_version"] == "m2"

        assert json.loads(_cli(registry, "rollback"))["live"] == "m1"
        wait_until(lambda: _serving(settings) == _serving(second) == {"m1"}, 30,
                   "both workers back on m1")  # fmt: skip
        swaps = scrape(settings.metrics_port)[("portrait_model_swaps_total",
                                               (("result", "swapped"),))]  # fmt: skip
        assert swaps == 2  # m1 -> m2 -> m1 on the worker that was not killed

        # a bad candidate: NaN outputs are refused at staging, nothing changes
        refused = _cli(registry, "stage", str(nan_tiny_model("m-nan")), returncode=1)
        assert "non-finite" in refused
        assert json.loads((registry / "pointer.json").read_text())["candidate"] is None
        # a model whose files break after staging: promoted, it fails to load on every worker,
        # which go on serving m1 and consuming
        _cli(registry, "stage", str(named_tiny_model("m3")))
        graph = registry / "models" / "m3" / "model.fp32.onnx"
        graph.write_bytes(graph.read_bytes()[:-1] + b"\0")
        _cli(registry, "promote")
        failed = (("result", "failed"),)
        wait_until(lambda: all(scrape(s.metrics_port).get(("portrait_model_swaps_total", failed))
                               == 1 for s in (settings, second)), 30,
                   "a failed swap counted on both workers")  # fmt: skip
        assert _serving(settings) == _serving(second) == {"m1"}
        before = consumed(workers[0]) + consumed(workers[1])
        produce(bootstrap, seeded_events(settings, 12, USERS, 40, first=EVENTS))
        wait_until(lambda: consumed(workers[0]) + consumed(workers[1]) >= before + 40, 60,
                   "events consumed after the failed swap")  # fmt: skip
    finally:
        for worker in workers:
            worker.stop()
