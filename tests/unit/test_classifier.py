"""SentimentClassifier on the tiny random model: shapes, order, edge texts, device, load errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from models.contract.classifier import CHARS_PER_TOKEN_LIMIT, SentimentClassifier, _sub_batches
from models.contract.errors import DeviceUnavailableError, InferenceError, ModelLoadError

TINY_MAX_SEQ_LEN = 32  # what tests/conftest.py writes into the tiny model's manifest

EDGE_TEXTS = [
    "",
    "   \n\t",
    "great product " * 800,  # 11,200 characters, far over max_seq_len tokens
    "😀😡🎉",
    "质量很好 but the delivery was slow 物流太慢",
    "\x00\x07control\x1b[31m chars\x7f",
    "\ud83d",  # lone surrogate, as JSON "\ud83d" decodes
    "lone surrogate \udc00 inside",
]


@pytest.fixture(scope="module")
def classifier(tiny_model_dir: Path) -> SentimentClassifier:
    return SentimentClassifier.load(tiny_model_dir, device="cpu")


def test_load_reads_manifest(classifier: SentimentClassifier) -> None:
    assert classifier.labels == ("negative", "neutral", "positive")
    assert classifier.max_seq_len == TINY_MAX_SEQ_LEN
    assert classifier.model_version == "tiny-random-bert-test"
    assert classifier.provider == "CPUExecutionProvider"
    assert classifier.device == "cpu"
    assert classifier.variant == "fp32"


def test_probabilities_shape_dtype_and_rows_sum_to_one(classifier: SentimentClassifier) -> None:
    probs = classifier.predict_proba(["good", "bad", "fine I guess"])
    assert probs.shape == (3, 3)
    assert probs.dtype == np.float32
    assert np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


def test_matches_torch_reference(tiny_model: Any) -> None:
    texts = ["I love it", "the worst purchase of my life, never again", ""]
    got = SentimentClassifier.load(tiny_model.model_dir, device="cpu").predict_proba(texts)
    np.testing.assert_allclose(got, tiny_model.torch_proba(texts), atol=1e-5)


def test_batch_equals_per_text_in_input_order(classifier: SentimentClassifier) -> None:
    texts = ["short", "a much longer comment that forces padding on the short ones", "meh", ""]
    batch = classifier.predict_proba(texts)
    singles = np.vstack([classifier.predict_proba([t]) for t in texts])
    np.testing.assert_allclose(batch, singles, atol=1e-5)
    # the texts score differently, so a reordering or padding leak would show
    assert np.abs(singles[0] - singles[1]).max() > 1e-2
    reversed_batch = classifier.predict_proba(texts[::-1])
    np.testing.assert_allclose(reversed_batch[::-1], batch, atol=1e-5)


MIXED_TEXTS = [
    "a much longer comment about the delivery, the packaging and the colour of the box",
    "",
    "ok",
    "x" * 10_000,  # one 10,000-character word, truncated to max_seq_len tokens
    "😀😡🎉",
    "质量很好 but the delivery was slow 物流太慢",
    *(" ".join(["good"] * n) for n in (1, 3, 5, 8, 12, 17, 23, 29)),
    *(" ".join(["bad", "service"] * n) for n in (1, 2, 4, 7, 11)),
    "great product " * 800,  # 11,200 characters
    "fine",
]


class _RecordingSession:
    """Wraps the real onnxruntime session and records the shape of each batch it runs."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self.shapes: list[tuple[int, int]] = []

    def run(self, output_names: list[str], feeds: dict[str, Any]) -> Any:
        self.shapes.append(feeds["input_ids"].shape)
        return self._session.run(output_names, feeds)


def test_sub_batches_match_single_rows_in_input_order(tiny_model_dir: Path) -> None:
    model = SentimentClassifier.load(tiny_model_dir, device="cpu")
    singles = np.vstack([model.predict_logits([t]) for t in MIXED_TEXTS])
    recorder = _RecordingSession(model.session)
    model._session = recorder  # the one seam: onnxruntime itself
    batch = model.predict_logits(MIXED_TEXTS)
    assert batch.shape == (len(MIXED_TEXTS), 3) and batch.dtype == np.float32
    np.testing.assert_allclose(batch, singles, atol=1e-4)
    # several sub-batches, each cut to its own longest row, widths ascending, all rows run once
    widths = [width for _, width in recorder.shapes]
    assert len(recorder.shapes) > 1 and widths == sorted(widths) and widths[0] < TINY_MAX_SEQ_LEN
    assert sum(rows for rows, _ in recorder.shapes) == len(MIXED_TEXTS)


def test_sub_batches_restore_input_order(classifier: SentimentClassifier) -> None:
    permutation = np.random.default_rng(7).permutation(len(MIXED_TEXTS))
    batch = classifier.predict_logits(MIXED_TEXTS)
    shuffled = classifier.predict_logits([MIXED_TEXTS[i] for i in permutation])
    np.testing.assert_allclose(shuffled, batch[permutation], atol=1e-4)
    assert np.abs(batch[1] - batch[0]).max() > 1e-3  # the rows differ, so a mix-up would show


def test_sub_batch_rule_cuts_at_length_ratio_after_min_rows() -> None:
    lengths = np.array([2] * 8 + [3] * 8 + [5] * 8 + [32] * 2, dtype=np.int64)
    assert _sub_batches(lengths) == [(0, 16), (16, 24), (24, 26)]  # 3 <= 1.5 x 2 stays in
    assert _sub_batches(np.array([2, 3, 64], dtype=np.int64)) == [(0, 3)]  # fewer than 8 rows
    assert _sub_batches(np.array([7], dtype=np.int64)) == [(0, 1)]
    assert _sub_batches(lengths, max_rows=1) == [(i, i + 1) for i in range(len(lengths))]
    assert _sub_batches(lengths, max_rows=10) == [(0, 10), (10, 18), (18, 26)]


class _FailingSession:
    """Stands in for the onnxruntime session: every run fails."""

    def __init__(self) -> None:
        self.calls = 0

    def run(self, *args: Any) -> Any:
        self.calls += 1
        raise RuntimeError("onnxruntime exploded")


@pytest.fixture
def failing(tiny_model_dir: Path) -> tuple[SentimentClassifier, _FailingSession]:
    model = SentimentClassifier.load(tiny_model_dir, device="cpu")
    session = _FailingSession()
    model._session = session  # the one seam: onnxruntime itself
    return model, session


def test_empty_batch_returns_zero_rows_without_running(
    failing: tuple[SentimentClassifier, _FailingSession],
) -> None:
    model, session = failing
    probs = model.predict_proba([])
    assert probs.shape == (0, 3)
    assert probs.dtype == np.float32
    logits = model.predict_logits([])
    assert logits.shape == (0, 3) and logits.dtype == np.float32
    assert session.calls == 0  # an empty batch into the fused int8 graph kills it with SIGFPE


def test_onnxruntime_failure_raises_inference_error(
    failing: tuple[SentimentClassifier, _FailingSession],
) -> None:
    model, session = failing
    with pytest.raises(InferenceError, match="batch of 2 texts") as info:
        model.predict_proba(["a", "b"])
    assert isinstance(info.value.__cause__, RuntimeError)
    assert session.calls == 1


@pytest.mark.parametrize("text", EDGE_TEXTS, ids=range(len(EDGE_TEXTS)))
def test_edge_text_gives_a_probability_row(classifier: SentimentClassifier, text: str) -> None:
    probs = classifier.predict_proba([text, "plain text beside it"])
    assert probs.shape == (2, 3)
    assert np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(
        probs[1], classifier.predict_proba(["plain text beside it"])[0], atol=1e-5
    )


def test_long_text_is_truncated_to_max_seq_len(classifier: SentimentClassifier) -> None:
    long_text = "word " * 2000  # 10,000 characters
    feeds = classifier.encode([long_text, "short"])
    assert feeds["input_ids"].shape == (2, TINY_MAX_SEQ_LEN)
    assert feeds["input_ids"].dtype == np.int64
    assert feeds["attention_mask"][1].sum() < TINY_MAX_SEQ_LEN  # the short row is padded


def test_character_cut_keeps_the_same_tokens(classifier: SentimentClassifier) -> None:
    text = "ab " * (TINY_MAX_SEQ_LEN * CHARS_PER_TOKEN_LIMIT)  # longer than the cut
    head = text[: TINY_MAX_SEQ_LEN * 4]
    np.testing.assert_array_equal(
        classifier.encode([text])["input_ids"], classifier.encode([head])["input_ids"]
    )


def test_lone_surrogate_is_classified_like_replacement_char(
    classifier: SentimentClassifier,
) -> None:
    np.testing.assert_allclose(
        classifier.predict_proba(["x \ud83d y"]),
        classifier.predict_proba(["x \ufffd y"]),
        atol=1e-6,
    )


def test_non_string_text_raises_type_error(classifier: SentimentClassifier) -> None:
    with pytest.raises(TypeError, match="must be str"):
        classifier.predict_proba(["ok", None])  # type: ignore[list-item]


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is available here"
)
def test_cuda_unavailable_raises_instead_of_cpu_fallback(tiny_model_dir: Path) -> None:
    with pytest.raises(DeviceUnavailableError) as info:
        SentimentClassifier.load(tiny_model_dir, device="cuda")
    assert info.value.requested == "cuda"
    assert "CPUExecutionProvider" in info.value.available_providers
    assert "PORTRAIT_MODEL__DEVICE" in str(info.value)


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is available here"
)
def test_auto_device_uses_cpu_without_cuda(tiny_model_dir: Path) -> None:
    assert (
        SentimentClassifier.load(tiny_model_dir, device="auto").provider == "CPUExecutionProvider"
    )


@pytest.fixture
def cuda_listed_but_broken(monkeypatch: pytest.MonkeyPatch) -> None:
    """As onnxruntime-gpu on a machine without a usable GPU: CUDA is listed, sessions get CPU."""
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is really available here")
    listed = [*ort.get_available_providers(), "CUDAExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: listed)


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
@pytest.mark.usefixtures("cuda_listed_but_broken")
def test_cuda_that_fails_to_start_raises_instead_of_cpu_fallback(tiny_model_dir: Path) -> None:
    with pytest.raises(DeviceUnavailableError, match="failed to initialise"):
        SentimentClassifier.load(tiny_model_dir, device="cuda")


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
@pytest.mark.usefixtures("cuda_listed_but_broken")
def test_auto_falls_back_to_cpu_when_cuda_fails_to_start(tiny_model_dir: Path) -> None:
    model = SentimentClassifier.load(tiny_model_dir, device="auto")
    assert (model.provider, model.device) == ("CPUExecutionProvider", "cpu")


def test_missing_model_dir_raises_model_load_error_with_hint(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError) as info:
        SentimentClassifier.load(missing)
    assert info.value.path == missing
    assert "portrait export" in str(info.value)
    assert "PORTRAIT_MODEL__PATH" in str(info.value)


def _copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    return target


def test_missing_manifest_raises_model_load_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = _copy(tiny_model_dir, tmp_path)
    (model_dir / "manifest.json").unlink()
    with pytest.raises(ModelLoadError, match="manifest.json is missing") as info:
        SentimentClassifier.load(model_dir)
    assert info.value.path == model_dir / "manifest.json"


@pytest.mark.parametrize("content", ["{", "[]", '{"labels": ["a", "b", "c"]}'])
def test_invalid_manifest_raises_model_load_error(
    tiny_model_dir: Path, tmp_path: Path, content: str
) -> None:
    model_dir = _copy(tiny_model_dir, tmp_path)
    (model_dir / "manifest.json").write_text(content)
    with pytest.raises(ModelLoadError, match="not a valid manifest"):
        SentimentClassifier.load(model_dir)


def test_corrupt_graph_fails_checksum(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = _copy(tiny_model_dir, tmp_path)
    graph = model_dir / "model.fp32.onnx"
    graph.write_bytes(graph.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match="sha256") as info:
        SentimentClassifier.load(model_dir, device="cpu")
    assert info.value.path == graph


def test_corrupt_graph_without_checksum_fails_to_load(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = _copy(tiny_model_dir, tmp_path)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    del manifest["files"]["model.fp32.onnx"]
    (model_dir / "manifest.json").write_text(json.dumps(manifest))
    (model_dir / "model.fp32.onnx").write_bytes(b"not an onnx graph")
    with pytest.raises(ModelLoadError, match="onnxruntime cannot load"):
        SentimentClassifier.load(model_dir, device="cpu")


def test_default_variant_missing_falls_back_to_fp32(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = _copy(tiny_model_dir, tmp_path)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    manifest["default_variant"] = {"cpu": "int8", "cuda": "fp16"}
    (model_dir / "manifest.json").write_text(json.dumps(manifest))
    assert SentimentClassifier.load(model_dir, device="cpu").variant == "fp32"


def test_core_modules_import_neither_torch_nor_transformers() -> None:
    code = (
        "import sys, models.contract.classifier, stream.profile, stream.metrics, stream.settings;"
        "print(sorted(m for m in ('torch', 'transformers', 'faust') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
