"""Export parity on a tiny random BERT built in code (fast; no trained model needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from export.onnx_export import export_fp32, optimise, quantise_int8, to_fp16  # noqa: E402
from export.validate import SHAPES, ParityError, onnx_logits, shape_cases, torch_logits_fn, validate  # noqa: E402

TEXTS = [
    "the flight was delayed three hours and nobody told us anything",
    "great service, friendly crew, would fly again",
    "my bag arrived",
    "worst customer support ever!!! never again",
    "ok",
    "I am not sure how I feel about the new seats, they look nice but the legroom is tight",
] * 6


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, object, dict[str, Path]]:
    from models.train import base_checkpoint

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, num_labels=3, initializer_range=0.2, attn_implementation="eager",
    )  # fmt: skip
    model = transformers.BertForSequenceClassification(config).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(base_checkpoint())
    out = tmp_path_factory.mktemp("tiny-export")
    raw = export_fp32(model, out / "raw.onnx")
    fp32 = optimise(raw, out / "model.fp32.onnx", num_heads=4, hidden_size=32)
    graphs = {
        "fp32": fp32,
        "fp32-unoptimised": raw,
        "int8": quantise_int8(fp32, out / "model.int8.onnx"),
    }
    graphs["fp16"] = to_fp16(fp32, out / "model.fp16.onnx")
    return model, tokenizer, graphs


def test_shape_cases_are_padded_real_sequences(tiny) -> None:  # type: ignore[no-untyped-def]
    _, tokenizer, _ = tiny
    cases = shape_cases(tokenizer, TEXTS)
    assert [c[1]["input_ids"].shape for c in cases] == list(SHAPES)
    for _, batch in cases:
        assert batch["input_ids"].dtype == np.int64
        assert batch["attention_mask"][0].all()  # row 0 fills the sequence
    assert any(not b["attention_mask"].all() for _, b in cases)  # some rows are padded


def test_fp32_graphs_match_pytorch_and_are_batch_invariant(tiny) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer, graphs = tiny
    labels = [i % 3 for i in range(len(TEXTS))]
    cpu_graphs = {k: v for k, v in graphs.items() if k.startswith("fp32")}
    report = validate(torch_logits_fn(model), cpu_graphs, tokenizer, TEXTS, labels, max_seq_len=64)
    assert report.max_abs_diff["fp32"] <= 1e-4
    assert report.max_abs_diff["fp32-unoptimised"] <= 1e-4
    assert report.batch_invariance_max_diff["fp32"] <= 1e-4


def test_reduced_precision_graphs_agree_with_fp32(tiny) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer, graphs = tiny
    labels = [i % 3 for i in range(len(TEXTS))]
    report = validate(torch_logits_fn(model), graphs, tokenizer, TEXTS, labels, max_seq_len=64)
    assert report.label_agreement["int8"] >= 0.96
    assert report.label_agreement["fp16"] >= 0.96


def test_a_wrong_graph_fails_with_every_case_listed(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer, graphs = tiny
    torch.manual_seed(1)
    other = transformers.BertForSequenceClassification(model.config).eval()
    wrong = export_fp32(other, tmp_path / "other.onnx")
    with pytest.raises(ParityError) as info:
        validate(
            torch_logits_fn(model),
            {"fp32": wrong},
            tokenizer,
            TEXTS,
            [0] * len(TEXTS),
            max_seq_len=64,
        )
    failing = "\n".join(info.value.failures)
    for batch_size, seq_len in SHAPES:
        assert f"shape ({batch_size},{seq_len})" in failing
    assert "real texts" in failing


def test_graph_has_named_dynamic_axes(tiny) -> None:  # type: ignore[no-untyped-def]
    import onnx

    _, _, graphs = tiny
    graph = onnx.load(str(graphs["fp32"])).graph
    dims = {i.name: [d.dim_param for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert dims == {
        name: ["batch_size", "sequence_length"]
        for name in ("input_ids", "attention_mask", "token_type_ids")
    }
    assert [o.name for o in graph.output] == ["logits"]


@pytest.mark.parametrize(("graph", "tolerance"), [("fp32", 1e-4), ("int8", 0.05)])
def test_padding_does_not_change_a_row(tiny, graph: str, tolerance: float) -> None:  # type: ignore[no-untyped-def]
    """fp32 is batch invariant to 1e-4. Dynamic int8 quantises activations with one scale per
    tensor, computed over the whole batch, so a row's logits move slightly with its batch-mates."""
    import onnxruntime as ort

    _, tokenizer, graphs = tiny
    session = ort.InferenceSession(str(graphs[graph]), providers=["CPUExecutionProvider"])
    enc = tokenizer(TEXTS[:4], padding=True, return_tensors="np")
    together = onnx_logits(session, {k: v.astype(np.int64) for k, v in enc.items()})
    alone = tokenizer(TEXTS[2:3], return_tensors="np")
    single = onnx_logits(session, {k: v.astype(np.int64) for k, v in alone.items()})
    assert np.abs(together[2] - single[0]).max() < tolerance


def test_int8_runs_one_row_at_a_time_so_a_verdict_ignores_its_micro_batch(  # type: ignore[no-untyped-def]
    tiny, tmp_path: Path
) -> None:
    """The manifest asks for one row per run of the dynamically quantised graph; the runtime
    honours it, and the export gate measures alone against micro-batches through the runtime."""
    import shutil

    from export.validate import runtime_batch_independence
    from models.contract.classifier import SentimentClassifier
    from models.contract.manifest import write_manifest

    _, tokenizer, graphs = tiny
    for name in ("fp32", "int8"):
        shutil.copy(graphs[name], tmp_path / f"model.{name}.onnx")
    backend = tokenizer.backend_tokenizer
    backend.enable_padding(pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token)
    backend.save(str(tmp_path / "tokenizer.json"))
    meta = {"model_version": "tiny", "labels": ["negative", "neutral", "positive"]}
    manifest = write_manifest(tmp_path, {**meta, "max_seq_len": 64})
    assert manifest["variants"]["int8"]["rows_per_run"] == 1
    assert "rows_per_run" not in manifest["variants"]["fp32"]
    assert SentimentClassifier.load(tmp_path, device="cpu", variant="int8").rows_per_run == 1
    assert SentimentClassifier.load(tmp_path, device="cpu", variant="fp32").rows_per_run == 0
    for name in ("fp32", "int8"):
        worst, changed = runtime_batch_independence(tmp_path, name, TEXTS, batch_size=16)
        assert worst <= 1e-5 and changed == 0, name


def test_mean_pooling_classifier_with_a_trimmed_table_exports_and_matches_torch(  # type: ignore[no-untyped-def]
    tiny, tmp_path: Path
) -> None:
    """The e5 architecture: ids beyond the trimmed table read as <unk> in the graph as in torch."""
    from models.classifier import MeanPoolingBertClassifier

    _, tokenizer, _ = tiny
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=3000, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, num_labels=3, initializer_range=0.2, unk_token_id=100,
        attn_implementation="eager", architectures=["MeanPoolingBertClassifier"],
    )  # fmt: skip
    model = MeanPoolingBertClassifier(config).eval()
    raw = export_fp32(model, tmp_path / "raw.onnx")
    fp32 = optimise(raw, tmp_path / "model.fp32.onnx", num_heads=4, hidden_size=32)
    graphs = {"fp32": fp32, "int8": quantise_int8(fp32, tmp_path / "model.int8.onnx")}
    labels = [i % 3 for i in range(len(TEXTS))]
    ids = tokenizer(TEXTS, add_special_tokens=False)["input_ids"]
    assert any(i >= 3000 for row in ids for i in row)  # the texts do reach beyond the table
    report = validate(
        torch_logits_fn(model), graphs, tokenizer, TEXTS, labels, max_seq_len=64,
        rows_per_run={"int8": 1},
    )  # fmt: skip
    assert report.max_abs_diff["fp32"] <= 1e-4
    assert report.label_agreement["int8"] >= 0.96
