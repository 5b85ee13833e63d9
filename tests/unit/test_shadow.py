"""Shadow scoring: metrics of the candidate's verdicts; never blocking, bounded, errors counted."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry

from stream.metrics import Metrics
from stream.shadow import ShadowScorer

POSITIVE, NEGATIVE = (0.1, 0.1, 0.8), (0.8, 0.1, 0.1)


class Candidate:
    model_version = "cand-1"

    def __init__(self, nan: bool = False, gate: threading.Event | None = None) -> None:
        self.nan, self.gate = nan, gate

    def predict_proba(self, texts: Sequence[str]) -> NDArray[np.float64]:
        if self.gate is not None:
            self.gate.wait(5)
        rows = [POSITIVE if "good" in t else NEGATIVE for t in texts]
        return np.full((len(texts), 3), np.nan) if self.nan else np.array(rows)


def _value(metrics: Metrics, name: str, **labels: str) -> float:
    got = metrics.registry.get_sample_value(name, {"candidate": "cand-1", **labels})
    return 0.0 if got is None else got


def test_agreement_and_label_shares_of_both_models() -> None:
    metrics = Metrics(CollectorRegistry())

    async def go() -> None:
        scorer = ShadowScorer(Candidate(), metrics, 100, ThreadPoolExecutor(1))
        # the live model said positive to all three; the candidate says negative to "bad"
        scorer.offer(["good one", "good two", "bad"], [POSITIVE] * 3)
        await asyncio.sleep(0.3)

    asyncio.run(go())
    assert _value(metrics, "portrait_shadow_events_total") == 3
    assert _value(metrics, "portrait_shadow_agreements_total") == 2
    assert _value(metrics, "portrait_shadow_predictions_total", model="live",
                  label="positive") == 3  # fmt: skip
    assert _value(metrics, "portrait_shadow_predictions_total", model="candidate",
                  label="negative") == 1  # fmt: skip


def test_a_busy_candidate_is_skipped_and_the_limit_holds() -> None:
    metrics = Metrics(CollectorRegistry())
    gate = threading.Event()

    async def go() -> ShadowScorer:
        scorer = ShadowScorer(Candidate(gate=gate), metrics, 5, ThreadPoolExecutor(1))
        scorer.offer(["good"] * 4, [POSITIVE] * 4)  # returns at once: the candidate waits
        scorer.offer(["good"] * 2, [POSITIVE] * 2)  # still busy: skipped, not queued
        gate.set()
        await asyncio.sleep(0.3)
        scorer.offer(["good"] * 3, [POSITIVE] * 3)  # only 1 left of the 5
        await asyncio.sleep(0.3)
        scorer.offer(["good"], [POSITIVE])  # done: nothing
        return scorer

    scorer = asyncio.run(go())
    assert scorer.done and _value(metrics, "portrait_shadow_events_total") == 5
    assert _value(metrics, "portrait_shadow_skipped_total") == 2


def test_a_share_below_one_scores_that_share_of_the_micro_batches() -> None:
    metrics = Metrics(CollectorRegistry())

    async def go() -> None:
        scorer = ShadowScorer(Candidate(), metrics, 1000, ThreadPoolExecutor(1), share=0.25)
        for i in range(8):
            scorer.offer([f"good {i}", "bad"], [POSITIVE] * 2)
            await asyncio.sleep(0.05)  # never busy: only the share decides

    asyncio.run(go())
    assert _value(metrics, "portrait_shadow_events_total") == 4  # batches 1 and 5, 2 comments each
    assert _value(metrics, "portrait_shadow_skipped_total") == 0


def test_non_finite_candidate_outputs_are_failures_not_crashes() -> None:
    metrics = Metrics(CollectorRegistry())

    async def go() -> None:
        scorer = ShadowScorer(Candidate(nan=True), metrics, 10, ThreadPoolExecutor(1))
        scorer.offer(["good"], [POSITIVE])
        await asyncio.sleep(0.3)

    asyncio.run(go())
    assert _value(metrics, "portrait_shadow_failures_total") == 1
    assert _value(metrics, "portrait_shadow_events_total") == 0


def test_the_report_sums_workers_and_scores_corrections_with_both_models() -> None:
    from stream.labels import Correction
    from stream.tools.shadow_report import correction_accuracy, made_since, shadow_summary

    c, s = (("candidate", "cand-1"),), "portrait_shadow_predictions_total"
    samples = {  # two workers' samples, already summed
        ("portrait_shadow_events_total", c): 10.0,
        ("portrait_shadow_agreements_total", c): 8.0,
        (s, (("candidate", "cand-1"), ("label", "positive"), ("model", "live"))): 10.0,
        (s, (("candidate", "cand-1"), ("label", "negative"), ("model", "candidate"))): 2.0,
        (s, (("candidate", "cand-1"), ("label", "positive"), ("model", "candidate"))): 8.0,
        ("portrait_shadow_inference_seconds_sum", c): 0.5,
        ("portrait_shadow_inference_seconds_count", c): 2.0,
        ("portrait_inference_seconds_sum", ()): 0.2,
        ("portrait_inference_seconds_count", ()): 4.0,
    }
    summary = shadow_summary(samples, "cand-1")
    assert summary["events"] == 10 and summary["agreement"] == 0.8
    assert summary["shares"]["candidate"] == {"negative": 0.2, "neutral": 0.0, "positive": 0.8}
    assert summary["candidate_s_per_call"] == 0.25 and summary["live_s_per_call"] == 0.05

    def correction(text: str, label: str, at: str = "2026-12-01T00:00:00Z") -> Correction:
        return Correction(correction_id=text, user_id="u", event_id=text, text=text,
                          predicted_label="positive", probabilities=POSITIVE,
                          corrected_label=label, model_version="live-1",  # type: ignore[arg-type]
                          corrected_at=at)  # fmt: skip

    class Live:
        def predict_proba(self, texts: Sequence[str]) -> NDArray[np.float64]:
            return np.array([POSITIVE] * len(texts))

    rows = [correction("good", "positive"), correction("bad", "negative")]
    accuracy = correction_accuracy(rows, {"live": Live(), "candidate": Candidate()})
    assert accuracy == {"rows": 2, "live": 0.5, "candidate": 1.0}
    # only corrections made in the shadow period (since staging): earlier ones may be training rows
    earlier = correction("old", "negative", "2026-11-30T23:59:59Z")
    assert made_since([earlier, *rows], "2026-12-01T00:00:00Z") == rows
    assert made_since([earlier, *rows], None) == [earlier, *rows]
