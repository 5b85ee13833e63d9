"""Corrections in training and evaluation: the held-out part, the fixed split kept fixed, and a
retrained checkpoint compared with another model on the same held-out rows."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from models.corrections import HELD_OUT_HASHES, load_corrections, split_corrections
from models.data import DataError, LabelledComment, read_split_hashes, split, text_sha256

LABELS3 = ("negative", "neutral", "positive")


def _base() -> list[LabelledComment]:
    return [
        LabelledComment(f"base comment {label} {i}", label, "en", "test")
        for i in range(40)
        for label in LABELS3
    ]


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def _corrections(n: int = 20) -> list[dict[str, object]]:
    return [
        {"text": f"live comment {i}", "label": LABELS3[i % 3], "lang": "en", "confidence": 3.0}
        for i in range(n)
    ]


def test_the_held_out_part_is_stratified_seeded_and_independent_of_row_order(
    tmp_path: Path,
) -> None:
    base = split(_base(), seed=13)
    rows = _corrections(30)
    a = split_corrections(load_corrections(_write(tmp_path / "a.jsonl", rows)), base, seed=13)
    random.Random(1).shuffle(rows)
    b = split_corrections(load_corrections(_write(tmp_path / "b.jsonl", rows)), base, seed=13)
    assert {r.text for r in a.held_out} == {r.text for r in b.held_out}
    assert [sum(r.label == c for r in a.held_out) for c in LABELS3] == [2, 2, 2]  # 20% of 10 each
    assert len(a.trained) == 24 and a.split.train[-24:] == a.trained
    assert all(r.confidence == 3.0 for r in a.trained)  # the export's --weight is the loss weight
    other_seed = split_corrections(load_corrections(tmp_path / "a.jsonl"), base, seed=14)
    assert {r.text for r in other_seed.held_out} != {r.text for r in a.held_out}
    none_held = split_corrections(a.trained, base, seed=13, holdout=0.0)
    assert none_held.held_out == [] and len(none_held.trained) == 24
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        split_corrections(a.trained, base, seed=13, holdout=1.0)


def test_the_fixed_split_stays_fixed_and_a_correction_replaces_its_training_row(
    tmp_path: Path,
) -> None:
    base = split(_base(), seed=13)
    in_test, in_validation, in_train = base.test[0], base.validation[0], base.train[0]
    relabel = {"negative": "positive", "neutral": "negative", "positive": "neutral"}
    rows = [
        {"text": in_test.text, "label": relabel[in_test.label]},
        {"text": in_validation.text, "label": relabel[in_validation.label]},
        {"text": f"  {in_train.text}\n", "label": relabel[in_train.label]},  # cleaned, then matched
        {"text": "said twice", "label": "negative"},
        {"text": "said twice", "label": "positive"},  # corrected again: the last one wins
        {"text": "   ", "label": "neutral"},  # empty once cleaned
    ]
    cut = split_corrections(
        load_corrections(_write(tmp_path / "c.jsonl", rows)), base, seed=13, holdout=0.0
    )
    assert cut.split.test == base.test and cut.split.validation == base.validation
    assert cut.record() == {
        "trained": 2, "held_out": 0, "in_fixed_split": 2, "replaced_base_rows": 1,
    }  # fmt: skip
    train = {r.text: r.label for r in cut.split.train}
    assert train[in_train.text] == relabel[in_train.label]
    assert sum(r.text == in_train.text for r in cut.split.train) == 1
    assert train["said twice"] == "positive"
    assert len(cut.split.train) == len(base.train) + 1


def test_a_corrections_file_with_an_unknown_label_names_the_line(tmp_path: Path) -> None:
    rows = [{"text": "ok", "label": "neutral"}, {"text": "x", "label": "meh"}]
    path = _write(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError, match=r"bad\.jsonl:2: unknown label") as e:
        load_corrections(path)
    assert "meh" in str(e.value)


def test_retraining_on_corrections_is_evaluated_on_the_test_split_and_the_held_out_part_apart(
    tiny_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    import models.evaluate as evaluate_mod
    import models.train as train_mod

    monkeypatch.setattr(train_mod, "load", lambda source: _base())
    monkeypatch.setattr(evaluate_mod, "load", lambda source: _base())
    corrections = _write(tmp_path / "corrections.jsonl", _corrections(20))
    out = tmp_path / "retrained"
    record = train_mod.train(
        train_mod.TrainConfig(
            data="fake", base=str(tiny_base), out_dir=str(out), epochs=1, batch_size=8,
            evals_per_epoch=1, max_steps=2, corrections=str(corrections),
        )
    )  # fmt: skip
    held = read_split_hashes(out / HELD_OUT_HASHES)
    # 7/7/6 corrections per label: round(0.2 * n) = 1 of each held out
    assert record["corrections"] == {
        "trained": 17, "held_out": 3, "in_fixed_split": 0, "replaced_base_rows": 0,
    }  # fmt: skip
    assert record["split_sizes"]["train"] == len(split(_base(), seed=13).train) + 17  # type: ignore[index]
    assert len(held) == 3 and held <= {text_sha256(f"live comment {i}") for i in range(20)}

    result = evaluate_mod.evaluate(out, data="fake", compare=tiny_base, corrections=corrections)
    c = result["corrections"]
    assert c["held_out"] == 3  # type: ignore[index]
    assert c["model"]["n"] == c["compare"]["n"] == 3  # type: ignore[index]
    assert result["test_size"] == len(split(_base(), seed=13).test)
    report = evaluate_mod.format_report(result)
    assert "held-out corrections" in report and "3 rows" in report

    with pytest.raises(ValueError, match="corrections-holdout"):
        evaluate_mod.evaluate(out, data="fake", corrections=corrections, corrections_holdout=0.5)
