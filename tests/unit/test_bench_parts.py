"""The bench's pure parts: spreads, paired ratios, percentiles, stored predictions, the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.contract.errors import InferenceError, ModelLoadError
from stream.tools.bench.report import format_table, targets, write_chart, write_json
from stream.tools.bench.stats import Spread, nearest_rank, paired_ratio
from stream.tools.bench.stored import PROVIDER, StoredPredictions, text_key, write_predictions

LABELS = ("negative", "neutral", "positive")


def test_spread_median_min_max_in_order_taken() -> None:
    spread = Spread.of([3.0, 1.0, 2.0, 10.0])
    assert (spread.median, spread.min, spread.max) == (2.5, 1.0, 10.0)
    assert spread.to_dict()["values"] == [3.0, 1.0, 2.0, 10.0]
    with pytest.raises(ValueError):
        Spread.of([])


def test_paired_ratio_pairs_repeat_i_with_repeat_i() -> None:
    ratio = paired_ratio([10.0, 20.0, 30.0], [10.0, 10.0, 60.0])
    assert ratio.values == (1.0, 2.0, 0.5)
    assert (ratio.median, ratio.min, ratio.max) == (1.0, 0.5, 2.0)
    with pytest.raises(ValueError):
        paired_ratio([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        paired_ratio([1.0], [0.0])


def test_nearest_rank_percentiles_are_observed_values() -> None:
    values = [float(v) for v in range(1, 101)]
    assert nearest_rank(values) == {"p50": 50.0, "p95": 95.0, "p99": 99.0}
    assert nearest_rank([0.3]) == {"p50": 0.3, "p95": 0.3, "p99": 0.3}


def test_stored_predictions_round_trip_and_unknown_text_fails(tmp_path: Path) -> None:
    texts = ["great", "awful", "meh \ud83d"]  # a lone surrogate still has a key
    probs = np.array([[0.1, 0.2, 0.7], [0.8, 0.1, 0.1], [0.3, 0.4, 0.3]], dtype=np.float32)
    path = write_predictions(tmp_path / "p.json", texts, probs, model_version="m1", labels=LABELS)
    stored = StoredPredictions.load(path)
    assert stored.model_version == "m1+stored-predictions" and stored.provider == PROVIDER
    got = stored.predict_proba(["awful", "great", "awful"])
    np.testing.assert_array_equal(got, probs[[1, 0, 1]])
    assert stored.predict_proba([]).shape == (0, 3)
    assert len({text_key(t) for t in texts}) == 3
    with pytest.raises(InferenceError):
        stored.predict_proba(["never seen"])


def test_stored_predictions_file_must_be_ours(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ModelLoadError, match="not a stored-predictions file"):
        StoredPredictions.load(bad)
    with pytest.raises(ValueError):
        write_predictions(tmp_path / "x.json", ["a"], np.zeros((2, 3), np.float32),
                          model_version="m", labels=LABELS)  # fmt: skip


def _spread(median: float) -> dict[str, Any]:
    return Spread.of([median * 0.9, median, median * 1.1]).to_dict()


def _results(device: str = "cpu") -> dict[str, Any]:
    latency = {"p50": 0.05, "p95": 0.08, "p99": 0.09, "max": 0.1}
    run = {"load": 0.5, "offered_rate_per_s": 100.0, "sent_rate_per_s": 99.0, "events": 10,
           "latency_s": latency, "drain_s": 0.1}  # fmt: skip
    return {
        "meta": {"device": device, "cpu_count": 2, "model": {"version": "m"}},
        "throughput": {"a": _spread(400), "b": _spread(380), "c": _spread(360), "d": _spread(120),
                       "events_per_run": 100, "a_threads": 1, "baseline_is": "bs 1",
                       "worker": {"max_batch_size": 64, "max_wait_s": 0.02, "intra_op_threads": 1}},
        "ratios": {"c/a": _spread(0.9), "c/d": _spread(3.0), "pairing": "i with i"},
        "latency": {"capacity_per_s": 360.0, "runs": [run], "p99_bound_s": 0.5,
                    "p99_bound_is": "bound", "definition": "per event"},
        "batch_sweep": {"b": {"1": 100.0, "64": 380.0}, "c": {"1": 120.0, "64": 360.0}},
        "max_wait": [{"max_wait_s": 0.1, "c_events_per_s": 350.0, "latency": run}],
        "threads": {"why": "intra_op_threads=1: because"},
        "state": {"users": 1000, "updates_per_s": 2000.0, "peak_rss_bytes": 300 << 20,
                  "state_dir_bytes": 1 << 20, "seconds_per_million_users": 500.0,
                  "classifier": "stored predictions"},
    }  # fmt: skip


def test_targets_are_checked_not_asserted() -> None:
    checks = targets(_results())
    assert checks["c/a >= 0.85"]["met"] and checks["c/d >= 1"]["met"]
    assert checks["p99 at 50% load <= 0.500 s"]["met"]
    assert checks["state worker peak RSS <= 1 GiB"]["met"]
    assert not targets(_results("cuda"))["c/d >= 10"]["met"]
    assert targets({}) == {}


def test_report_table_json_and_chart(tmp_path: Path) -> None:
    results = _results()
    table = format_table(results)
    for text in ("(a) model ceiling", "(d) baseline", "c/a 0.90", "p99 0.090 s", "state-only mode",
                 "max_wait_s 0.1", "target c/a >= 0.85: met"):  # fmt: skip
        assert text in table, text
    written = json.loads(write_json(results, tmp_path / "r.json").read_text())
    assert written["targets"]["c/d >= 1"]["value"] == pytest.approx(3.0)
    pytest.importorskip("matplotlib")
    png = write_chart(results, tmp_path / "r.png")
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_baseline_model_is_reported_beside_a_and_checked_against_its_target() -> None:
    results = _results()
    results["throughput"]["a_baseline"] = {**_spread(500), "model": "old", "path": "old-artifact"}
    results["ratios"]["a/a_baseline"] = _spread(0.8)
    table = format_table(results)
    assert "(a) baseline model" in table and "old (old-artifact)" in table
    assert "a/a_baseline 0.80" in table
    assert targets(results)["a/a_baseline >= 0.7"]["met"]
    results["ratios"]["a/a_baseline"] = _spread(0.5)
    assert not targets(results)["a/a_baseline >= 0.7"]["met"]
    assert "a/a_baseline >= 0.7" not in targets(_results())  # no baseline, no such target
