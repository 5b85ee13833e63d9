"""``portrait bench --quick`` end to end with the tiny random model: every section, numbers > 0.

Runs the real command in a subprocess against the session's broker (run-scoped topic names), so
the same code path as a user's ``portrait bench`` is exercised: real workers, real broker, the
stored-predictions worker of the state-only mode. Nothing here asserts a speed (timing depends on
the machine); the assertions are on the shape and sign of the results.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

SECTIONS = ("meta", "threads", "throughput", "ratios", "shadow", "latency", "batch_sweep",
            "max_wait", "state", "targets")  # fmt: skip


def _positive(spread: dict[str, Any]) -> bool:
    return all(spread[k] > 0 for k in ("median", "min", "max")) and len(spread["values"]) >= 3


def test_quick_bench_writes_every_section(
    broker: Any, named_tiny_model: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "bench.json"
    tiny_model_dir = named_tiny_model("bench-tiny")  # with passed export gates: a registry takes it
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTRAIT_")}
    env["PORTRAIT_KAFKA__BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
    done = subprocess.run(
        [sys.executable, "-c", "from stream.tools.cli import main; main()", "bench", "--quick",
         "--model", str(tiny_model_dir), "--baseline-model", str(tiny_model_dir),
         "--out", str(out), "--latency-s", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(out.read_text())
    assert set(SECTIONS) <= set(results)
    throughput = results["throughput"]
    for name in ("a", "b", "c", "d"):
        assert _positive(throughput[name]), name
    assert _positive(results["ratios"]["c/a"]) and _positive(results["ratios"]["c/d"])
    assert _positive(throughput["a_baseline"]) and _positive(results["ratios"]["a/a_baseline"])
    assert throughput["baseline"]["max_batch_size"] == 1
    shadow = results["shadow"]  # (c) with and without a candidate in shadow, paired
    assert _positive(shadow["c"]) and _positive(shadow["c_shadow"])
    assert shadow["candidate"] == "bench-tiny-shadow-copy" and shadow["shadow_failures"] == 0
    assert shadow["comments_scored_in_shadow"] > 0 and "registry" in shadow["worker"]
    assert "shadow scoring (bench-tiny-shadow-copy)" in done.stdout
    assert results["threads"]["chosen"] in results["threads"]["candidates"] == [1, 2]
    for run in results["latency"]["runs"]:
        assert 0 < run["latency_s"]["p50"] <= run["latency_s"]["p95"] <= run["latency_s"]["p99"]
    assert [r["load"] for r in results["latency"]["runs"]] == [0.5, 0.8]
    assert set(results["batch_sweep"]["b"]) == {"1", "8", "64"} == set(results["batch_sweep"]["c"])
    assert all(v > 0 for v in results["batch_sweep"]["b"].values())
    assert all(v > 0 for v in results["batch_sweep"]["c"].values())
    assert len(results["max_wait"]) == 2
    assert all(r["c_events_per_s"] > 0 and r["latency"]["latency_s"]["p99"] > 0
               for r in results["max_wait"])  # fmt: skip
    state = results["state"]
    assert state["users"] == 500 and state["updates_per_s"] > 0 and state["peak_rss_bytes"] > 0
    assert "stored predictions" in state["classifier"]
    with_segments = results["state_segments"]  # the same run with 20 segments, side by side
    assert with_segments["segments"] == 20 and with_segments["users"] == 500
    assert with_segments["updates_per_s"] > 0 and "cost_share" in with_segments
    assert with_segments["segment_transitions"] > 0  # users entered segments: events were sent
    alone = results["state_conditions"]  # the same conditions, no profile entering
    assert alone["segments"] == 20 and alone["segment_transitions"] == 0
    assert alone["updates_per_s"] > 0 and "20 segment conditions cost < 25%" in results["targets"]
    assert out.with_suffix(".png").stat().st_size > 0
    assert "c/a" in done.stdout and "state-only mode" in done.stdout
    assert "a/a_baseline" in done.stdout
