"""Mixed sentiment: clause splitting in English and Chinese, the rule, one call per micro-batch."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pytest
from numpy.typing import NDArray

from models.contract.mixed import (
    DEFAULT_MAX_CLAUSES,
    DEFAULT_THRESHOLD,
    LABEL_ORDER,
    ClauseBatch,
    MixedRule,
    classify_with_clauses,
    split_clauses,
)
from stream.settings import MixedSettings, load_settings

ZH = "这个产品很好用，但是价格有点贵"
EN = "Great to use, but the price is a bit high"


# -- splitting ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "clauses"),
    [
        (ZH, ["这个产品很好用", "但是价格有点贵"]),
        (EN, ["Great to use", "but the price is a bit high"]),
        ("虽然便宜，但是质量差", ["虽然便宜", "但是质量差"]),
        ("虽然便宜但是质量差", ["虽然便宜", "但是质量差"]),  # no comma: cut before 但是 only
        ("物流很快可是包装破了", ["物流很快", "可是包装破了"]),
        ("挺好的，就是有点贵", ["挺好的", "就是有点贵"]),
        ("声音不错。不过电池一般！", ["声音不错", "不过电池一般"]),
        ("很好，但贵", ["很好", "但贵"]),  # a marker counts: 2 CJK characters make a clause
        ("Although it is cheap, it broke", ["Although it is cheap", "it broke"]),
        ("I love it even though it is pricey", ["I love it", "even though it is pricey"]),
        ("Nice screen BUT awful battery", ["Nice screen", "BUT awful battery"]),
        ("It works; however, the price is high.", ["It works", "however, the price is high"]),
        ("Works well\nShipping took weeks", ["Works well", "Shipping took weeks"]),
        ("Rated 3.5 stars, but 1,000 yen is a lot!", ["Rated 3.5 stars", "but 1,000 yen is a lot"]),
        ("质量很好 but shipping was slow", ["质量很好", "but shipping was slow"]),
        ("Love it 😍, but it broke 😡", ["Love it 😍", "but it broke 😡"]),
    ],
)
def test_split_at_markers_and_punctuation(text: str, clauses: list[str]) -> None:
    assert split_clauses(text) == clauses


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n\t",
        "...!!!，。？",
        "🙂🙂🙂",
        "🙂🙂, 🙂",
        "great value would buy again",  # no cut at all
        "Great, but pricey.",  # "Great" is one word: merged into the clause after it
        "No, it is great",
        "Fast, cheap, reliable",  # three one-word pieces: one clause
        "I like it though",  # a lone trailing marker belongs to the clause before it
        "这个不但便宜而且好用",  # 不但 ("not only") is no contrast
        "也就是说很好用",  # 就是说 ("that is to say") neither
        "I haven't tried the butter yet",  # "butter" is no marker; "yet" alone is too short
        "ok " * 3000,
    ],
)
def test_fewer_than_two_clauses_give_none(text: str) -> None:
    assert split_clauses(text) == []


def test_clauses_are_pieces_of_the_text_in_order() -> None:
    text = "Also, the sound is great; however, the battery dies fast. 但是客服很好！"
    clauses = split_clauses(text)
    assert clauses == ["Also, the sound is great", "however, the battery dies fast", "但是客服很好"]
    position = 0
    for clause in clauses:
        position = text.index(clause, position) + len(clause)


def test_ten_thousand_characters_are_capped_and_fast() -> None:
    text = ("Good product, bad battery. " * 400)[:10_000]
    start = time.perf_counter()
    clauses = split_clauses(text)
    elapsed_s = time.perf_counter() - start
    assert clauses == ["Good product", "bad battery"] * 4
    assert len(split_clauses(text, max_clauses=3)) == 3
    assert elapsed_s < 1.0  # linear and stops early; a loose bound, not a benchmark


def test_only_the_first_characters_are_split() -> None:
    assert split_clauses("word " * 900 + "but the price is a bit high") == []  # 4,500 characters
    start = time.perf_counter()
    assert split_clauses("word " * 180_000) == []  # 900 kB
    assert time.perf_counter() - start < 1.0


def test_long_text_of_short_pieces_merges_into_one_clause() -> None:
    assert split_clauses("a, " * 1300) == []


def test_max_clauses_below_two_is_refused() -> None:
    with pytest.raises(ValueError, match="max_clauses"):
        split_clauses(EN, max_clauses=1)


# -- the rule -------------------------------------------------------------------------------------
def proba(*rows: tuple[float, float, float]) -> NDArray[np.float32]:
    return np.array(rows, dtype=np.float32).reshape(len(rows), 3)


@pytest.mark.parametrize(
    ("rows", "mixed"),
    [
        ([(0.02, 0.08, 0.90), (0.80, 0.15, 0.05)], True),
        ([(0.80, 0.15, 0.05), (0.1, 0.3, 0.6), (0.3, 0.4, 0.3)], True),  # order does not matter
        ([(0.02, 0.08, 0.90), (0.38, 0.34, 0.28)], False),  # the complaint is not confident
        ([(0.02, 0.08, 0.90), (0.45, 0.50, 0.05)], False),  # neutral is its largest
        ([(0.02, 0.08, 0.90), (0.49, 0.42, 0.09)], True),  # a hedged complaint still counts
        ([(0.02, 0.08, 0.90), (0.05, 0.15, 0.80)], False),  # both positive
        ([(0.40, 0.20, 0.40), (0.35, 0.30, 0.35)], False),  # two near-neutral clauses
        ([(0.50, 0.00, 0.50)], False),  # one clause cannot be both sides
        ([(0.50, 0.00, 0.50), (0.50, 0.00, 0.50)], True),  # two can
        ([], False),
    ],
)
def test_rule_with_hand_made_probabilities(
    rows: list[tuple[float, float, float]], mixed: bool
) -> None:
    assert MixedRule().is_mixed(proba(*rows)) is mixed


def test_threshold_is_inclusive_and_configurable() -> None:
    rows = proba((0.1, 0.3, 0.6), (0.6, 0.3, 0.1))
    assert MixedRule(threshold=0.6).is_mixed(rows)
    assert not MixedRule(threshold=0.7).is_mixed(rows)


@pytest.mark.parametrize("threshold", [0.34, 1.01, float("nan")])
def test_threshold_outside_range_is_refused(threshold: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        MixedRule(threshold=threshold)


def test_rule_refuses_other_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        MixedRule().is_mixed(np.zeros((2, 2), dtype=np.float32))


def test_settings_defaults_are_the_rule_defaults() -> None:
    settings = MixedSettings()
    assert (settings.threshold, settings.max_clauses) == (DEFAULT_THRESHOLD, DEFAULT_MAX_CLAUSES)
    assert settings.enabled


def test_mixed_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTRAIT_MIXED__ENABLED", "false")
    monkeypatch.setenv("PORTRAIT_MIXED__THRESHOLD", "0.7")
    monkeypatch.setenv("PORTRAIT_MIXED__MAX_CLAUSES", "4")
    settings = load_settings()
    assert settings.mixed == MixedSettings(enabled=False, threshold=0.7, max_clauses=4)


# -- one predict_proba call per micro-batch -------------------------------------------------------
class RecordingClassifier:
    """Positive with "good"/"great"/"好", negative with "bad"/"price"/"贵"; records its calls."""

    labels: tuple[str, ...] = LABEL_ORDER
    model_version = "recording"
    provider = "CPUExecutionProvider"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def predict_proba(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.calls.append(list(texts))
        rows = []
        for text in texts:
            good = any(w in text.lower() for w in ("good", "great", "好"))
            bad = any(w in text.lower() for w in ("bad", "price", "贵"))
            rows.append(
                (0.1, 0.2, 0.7) if good and not bad else
                (0.8, 0.1, 0.1) if bad and not good else (0.2, 0.6, 0.2)
            )  # fmt: skip
        return np.array(rows, dtype=np.float32).reshape(len(texts), 3)


def test_one_call_with_the_comments_then_their_clauses() -> None:
    classifier = RecordingClassifier()
    comments = [ZH, "meh", EN]

    results = classify_with_clauses(classifier, comments)

    assert classifier.calls == [
        [ZH, "meh", EN, "这个产品很好用", "但是价格有点贵",
         "Great to use", "but the price is a bit high"],
    ]  # fmt: skip
    assert [r.mixed for r in results] == [True, False, True]
    assert [r.clause_count for r in results] == [2, 0, 2]
    assert results[0].probabilities == pytest.approx((0.2, 0.6, 0.2))  # whole-comment row
    assert all(isinstance(p, float) for p in results[0].probabilities)


def test_no_comments_still_one_empty_call() -> None:
    classifier = RecordingClassifier()
    assert classify_with_clauses(classifier, []) == []
    assert classifier.calls == [[]]


def test_other_label_order_is_refused() -> None:
    classifier = RecordingClassifier()
    classifier.labels = ("positive", "neutral", "negative")
    with pytest.raises(ValueError, match="labels"):
        classify_with_clauses(classifier, [EN])


def test_clause_batch_layout_and_rule_off() -> None:
    batch = ClauseBatch.build([EN, "meh", ZH], MixedRule(max_clauses=2))
    assert batch.comment_count == 3
    assert batch.texts[:3] == (EN, "meh", ZH)
    assert batch.clause_ranges == ((3, 5), (5, 5), (5, 7))
    off = ClauseBatch.build([EN, ZH], None)
    assert off.texts == (EN, ZH) and off.clause_ranges == ((2, 2), (2, 2))
    results = off.resolve([(0.1, 0.2, 0.7), (0.7, 0.2, 0.1)], None)
    assert [r.mixed if r else None for r in results] == [False, False]


def test_resolve_leaves_failed_rows_out() -> None:
    batch = ClauseBatch.build([EN, ZH], MixedRule())
    pos, neg = (0.1, 0.2, 0.7), (0.8, 0.1, 0.1)
    # EN failed itself; ZH's first clause failed, so one clause is left: not mixed
    results = batch.resolve([None, pos, pos, neg, None, neg], MixedRule())
    assert results[0] is None
    assert results[1] is not None and not results[1].mixed and results[1].clause_count == 2
    with pytest.raises(ValueError, match="rows"):
        batch.resolve([pos], MixedRule())
