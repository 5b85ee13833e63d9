"""Sentiment classifier runtime: an exported ONNX graph on onnxruntime, with its fast tokenizer.

Only onnxruntime, tokenizers and numpy: no torch, no transformers. The model directory is the one
``portrait export`` writes (the committed copy is ``models/artifact``)::

    manifest.json     model_version, labels, max_seq_len, default_variant {cpu, cuda},
                      variants {name: {file, precision}}, files {name: sha256}
    model.<variant>.onnx   inputs input_ids, attention_mask, token_type_ids: int64, shape
                      (batch_size, sequence_length); output logits: float32, shape
                      (batch_size, num_labels)
    tokenizer.json    Hugging Face fast-tokenizer file

Device policy: ``"cpu"`` runs the manifest's CPU variant on ``CPUExecutionProvider``; ``"cuda"``
runs its CUDA variant on ``CUDAExecutionProvider`` and raises :class:`DeviceUnavailableError` when
that provider is missing or fails to initialise (never a silent CPU fallback); ``"auto"`` uses CUDA
when it works and the CPU otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort  # no type hints: mypy's overrides ignore its imports
from numpy.typing import NDArray
from tokenizers import Tokenizer

from models.contract.errors import DeviceUnavailableError, InferenceError, ModelLoadError
from models.contract.logits import softmax
from models.contract.manifest import (
    DEFAULT_MODEL_DIR,
    FIX_HINT,
    RuntimeManifest,
    check_model_file,
    read_runtime_manifest,
)
from models.contract.text import replace_lone_surrogates

__all__ = [
    "CHARS_PER_TOKEN_LIMIT",
    "Device",
    "SentimentClassifier",
    "softmax_rows",
]

logger = logging.getLogger(__name__)

CHARS_PER_TOKEN_LIMIT = 64
"""Texts are cut to ``max_seq_len * CHARS_PER_TOKEN_LIMIT`` characters before tokenizing.

A WordPiece token covers at least one non-space character, so the cut changes the tokens only for a
text whose first ``max_seq_len`` tokens are spread over more characters than that (long runs of
whitespace or control characters); it bounds the tokenizer's work on huge texts (a 900 kB comment).
"""

_SUB_BATCH_LENGTH_RATIO = 1.5
"""A sub-batch of :meth:`SentimentClassifier.predict_logits` takes a row at most this many times
as long (tokens) as its shortest row, once it has ``_SUB_BATCH_MIN_ROWS`` rows."""

_SUB_BATCH_MIN_ROWS = 8
"""Rows a sub-batch reaches before a length jump can start the next one (see ``_sub_batches``)."""

_CPU = "CPUExecutionProvider"
_CUDA = "CUDAExecutionProvider"
_KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

Device = Literal["auto", "cpu", "cuda"]


class SentimentClassifier:
    """A loaded sentiment model. Build it with :meth:`load`.

    :meth:`predict_proba` blocks for the whole batch (tokenization and onnxruntime): call it off
    the event loop, e.g. from a one-thread executor.

    Attributes:
        labels: Class names in probability-column order, e.g.
            ``("negative", "neutral", "positive")``.
        max_seq_len: Tokens per text after truncation (including ``[CLS]`` and ``[SEP]``).
        model_version: The manifest's ``model_version``.
        provider: onnxruntime provider in use, ``"CPUExecutionProvider"`` or
            ``"CUDAExecutionProvider"``.
        device: ``"cpu"`` or ``"cuda"``.
        variant: Graph variant in use, e.g. ``"int8"``, ``"fp16"``, ``"fp32"``.
        rows_per_run: Most rows one onnxruntime run takes (the manifest's ``rows_per_run`` for
            the variant; 0 = no limit). 1 for dynamically quantised int8 graphs, whose
            activation scales span every row of a run: one row per run makes a verdict
            independent of the other comments of its micro-batch.
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        tokenizer: Tokenizer,
        manifest: RuntimeManifest,
        variant: str,
    ) -> None:
        self._session = session
        self._tokenizer = tokenizer
        self._input_names = [i.name for i in session.get_inputs()]
        self._output_name = session.get_outputs()[0].name
        self.labels = manifest.labels
        self.max_seq_len = manifest.max_seq_len
        self.model_version = manifest.model_version
        self.variant = variant
        self.rows_per_run = manifest.rows_per_run.get(variant, 0)
        self.provider = session.get_providers()[0]
        self.device = "cuda" if self.provider == _CUDA else "cpu"

    @classmethod
    def load(
        cls,
        model_dir: Path | None = None,
        device: Device = "auto",
        intra_op_threads: int = 0,
        variant: str | None = None,
    ) -> SentimentClassifier:
        """Load a model directory written by ``portrait export``.

        Args:
            model_dir: The directory; ``None`` = the committed artifact ``models/artifact``.
            device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (see the module docstring).
            intra_op_threads: onnxruntime intra-op threads; 0 = onnxruntime's default.
            variant: A graph variant of the manifest (``int8``, ``fp32``, ``fp16``); ``None`` =
                the manifest's default for the device.

        Returns:
            The classifier, ready to predict.

        Raises:
            DeviceUnavailableError: ``device="cuda"`` and onnxruntime cannot use CUDA here.
            ModelLoadError: The directory, manifest, tokenizer or graph is missing, corrupt (sha256
                differs from the manifest) or does not fit the graph contract; ``.path`` names it.
        """
        available = ort.get_available_providers()
        if device == "cuda" and _CUDA not in available:
            raise DeviceUnavailableError("cuda", available)
        path = Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR
        manifest = read_runtime_manifest(path)
        tokenizer = _load_tokenizer(path, manifest)
        want_cuda = device == "cuda" or (device == "auto" and _CUDA in available)
        session, variant = _open_session(path, manifest, want_cuda, intra_op_threads, variant)
        if want_cuda and session.get_providers()[0] != _CUDA:
            if device == "cuda":
                detail = "CUDAExecutionProvider failed to initialise"
                raise DeviceUnavailableError("cuda", available, detail=detail)
            logger.info("device=auto cuda_unusable=true falling_back=cpu")
            session, variant = _open_session(path, manifest, False, intra_op_threads, variant)
        model = cls(session, tokenizer, manifest, variant)
        logger.info(
            "model loaded model_version=%s variant=%s provider=%s max_seq_len=%s path=%s",
            model.model_version, variant, model.provider, model.max_seq_len, path,
        )  # fmt: skip
        return model

    @property
    def session(self) -> ort.InferenceSession:
        """The onnxruntime session, for benchmarks that time the graph alone (``portrait bench``).

        Calling ``session.run`` directly skips the checks of :meth:`predict_logits` (empty batch,
        output shape); the worker never does.
        """
        return self._session

    def encode(self, texts: Sequence[str]) -> dict[str, NDArray[np.int64]]:
        """Tokenize a batch: truncation to ``max_seq_len``, padding to the longest in the batch.

        Lone surrogates are replaced by U+FFFD and each text is cut to
        ``max_seq_len * CHARS_PER_TOKEN_LIMIT`` characters first.

        Args:
            texts: The texts, at least one.

        Returns:
            ``input_ids``, ``attention_mask``, ``token_type_ids``: int64, shape
            (batch_size, sequence_length), only those the graph declares.

        Raises:
            TypeError: An item of ``texts`` is not a ``str``.
        """
        return self._encode(texts)[0]

    def _encode(
        self, texts: Sequence[str]
    ) -> tuple[dict[str, NDArray[np.int64]], NDArray[np.int64]]:
        """:meth:`encode`'s arrays, and each text's token count: int64, shape (batch_size,).

        The token count includes ``[CLS]`` and ``[SEP]`` and excludes padding, which the
        tokenizer puts on the right (``_load_tokenizer``), so a row's first ``count`` columns are
        all its tokens.
        """
        limit = self.max_seq_len * CHARS_PER_TOKEN_LIMIT
        clean = []
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"texts must be str, got {type(text).__name__}")
            clean.append(replace_lone_surrogates(text[:limit]))
        encodings = self._tokenizer.encode_batch(clean)
        arrays = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        lengths = arrays["attention_mask"].sum(axis=1)
        return {name: arrays[name] for name in self._input_names}, lengths

    def predict_logits(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Logits for a batch of texts, in input order (see :meth:`predict_proba` for inputs).

        The batch is tokenized once, its rows are sorted by token count and onnxruntime runs on
        length-homogeneous sub-batches, each cut to its own longest row, so short texts are not
        padded to the batch's longest. The sub-batch rule (:func:`_sub_batches`): walking the
        sorted rows, a new sub-batch starts when the next row is more than
        ``_SUB_BATCH_LENGTH_RATIO`` times as long as the current sub-batch's shortest row and the
        current sub-batch already has ``_SUB_BATCH_MIN_ROWS`` rows, or when it has
        :attr:`rows_per_run` rows. The logits are written back in input order. With the attention
        mask a row's logits do not depend on the other rows or on padding, up to float rounding
        (fp32); graphs quantised dynamically (int8) quantise activations per run, so their
        manifest asks for one row per run and a row's logits then depend on the row alone.

        Returns:
            float32 logits, shape (batch_size, num_labels), in input order; shape
            (0, num_labels) for an empty batch, without calling onnxruntime (one fused int8
            graph crashes the process on it).

        Raises:
            TypeError: An item of ``texts`` is not a ``str``.
            InferenceError: onnxruntime failed on a sub-batch, or returned logits of the wrong
                shape.
        """
        logits = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for rows, sub_batch in self._plan(texts):
            logits[rows] = self._run(sub_batch, len(texts))
        return logits

    def graph_calls(
        self, texts: Sequence[str]
    ) -> list[tuple[ort.InferenceSession, dict[str, NDArray[np.int64]]]]:
        """The onnxruntime runs :meth:`predict_logits` makes for ``texts``, one per sub-batch.

        For measuring the graph alone on exactly the calls the worker makes (``portrait bench``
        (a)). Each is the session and its inputs: the graph's input names -> int64 arrays of
        shape (rows, sequence_length); ``[]`` for no texts.

        Raises:
            TypeError: An item of ``texts`` is not a ``str``.
        """
        return [(self._session, feeds) for _, feeds in self._plan(texts)]

    def _plan(
        self, texts: Sequence[str]
    ) -> list[tuple[NDArray[np.intp], dict[str, NDArray[np.int64]]]]:
        """Tokenize once; per sub-batch, its row indexes in ``texts`` and its cut-down inputs."""
        if len(texts) == 0:
            return []
        feeds, lengths = self._encode(texts)
        order = np.argsort(lengths, kind="stable")
        plan = []
        for start, stop in _sub_batches(lengths[order], self.rows_per_run):
            rows = order[start:stop]
            width = int(lengths[rows[-1]])  # the longest: rows are sorted by length
            plan.append((rows, {name: array[rows, :width] for name, array in feeds.items()}))
        return plan

    def _run(self, feeds: dict[str, NDArray[np.int64]], batch_size: int) -> NDArray[np.float32]:
        """onnxruntime on one sub-batch; float32 logits, shape (rows, num_labels)."""
        rows, width = feeds["input_ids"].shape
        try:
            outputs = self._session.run([self._output_name], feeds)
        except Exception as exc:  # onnxruntime raises its own untyped exceptions
            raise InferenceError(
                f"onnxruntime failed on a batch of {batch_size} texts (sub-batch of {rows} rows, "
                f"sequence_length {width}): {type(exc).__name__}"
            ) from exc
        logits = np.asarray(outputs[0], dtype=np.float32)
        if logits.shape != (rows, len(self.labels)):
            raise InferenceError(
                f"logits shape {logits.shape}, expected ({rows}, {len(self.labels)})"
            )
        return logits

    def predict_proba(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Class probabilities for a batch of texts, in input order.

        Args:
            texts: Comment texts; any string, including ``""``, whitespace only, emoji, lone
                surrogates and texts far longer than ``max_seq_len`` tokens (truncated).

        Returns:
            float32 probabilities, shape (batch_size, num_labels), rows sum to 1 (softmax of the
            logits); shape (0, num_labels) for an empty batch, without calling onnxruntime.

        Raises:
            TypeError: An item of ``texts`` is not a ``str``.
            InferenceError: onnxruntime failed on the batch.
        """
        return softmax_rows(self.predict_logits(texts))


def _sub_batches(sorted_lengths: NDArray[np.int64], max_rows: int = 0) -> list[tuple[int, int]]:
    """Cut rows sorted by token count into length-homogeneous sub-batches.

    A new sub-batch starts at row ``i`` when ``sorted_lengths[i]`` exceeds
    ``_SUB_BATCH_LENGTH_RATIO`` times the current sub-batch's first (shortest) length and the
    current sub-batch has at least ``_SUB_BATCH_MIN_ROWS`` rows. So each row is padded to at
    most ``_SUB_BATCH_LENGTH_RATIO`` times its own token count, except in a sub-batch that the
    minimum keeps whole; the minimum bounds the number of onnxruntime calls and keeps their
    matrix products from getting too small to run efficiently. A sub-batch never takes more than
    ``max_rows`` rows (0 = no limit).

    Args:
        sorted_lengths: Token counts in ascending order: int64, shape (batch_size,), at least
            one row.
        max_rows: The most rows in one sub-batch; 0 = no limit.

    Returns:
        ``(start, stop)`` row ranges that cover ``0 .. batch_size`` in order, none empty.
    """
    bounds = []
    start = 0
    for i in range(1, len(sorted_lengths)):
        long_enough = i - start >= _SUB_BATCH_MIN_ROWS
        full = 0 < max_rows <= i - start
        if full or (
            long_enough and sorted_lengths[i] > _SUB_BATCH_LENGTH_RATIO * sorted_lengths[start]
        ):
            bounds.append((start, i))
            start = i
    bounds.append((start, len(sorted_lengths)))
    return bounds


def softmax_rows(logits: NDArray[np.float32]) -> NDArray[np.float32]:
    """:func:`models.contract.logits.softmax` as float32, the runtime's dtype.

    An empty batch, shape (0, num_labels), is returned as is.
    """
    if len(logits) == 0:
        return logits
    return softmax(logits).astype(np.float32)


def _load_tokenizer(model_dir: Path, manifest: RuntimeManifest) -> Tokenizer:
    """``tokenizer.json`` with truncation to ``max_seq_len`` and padding to the longest."""
    path = check_model_file(model_dir, "tokenizer.json", manifest)
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on a bad file
        raise ModelLoadError(
            f"{path} is not a tokenizer file ({exc}); {FIX_HINT}", path=path
        ) from exc
    pad_token = (tokenizer.padding or {}).get("pad_token", "[PAD]")
    pad_id = tokenizer.token_to_id(pad_token)
    if pad_id is None:
        raise ModelLoadError(f"{path} has no padding token {pad_token!r}; {FIX_HINT}", path=path)
    tokenizer.enable_truncation(max_length=manifest.max_seq_len)
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token, length=None)
    return tokenizer


def _pick_variant(
    model_dir: Path, manifest: RuntimeManifest, cuda: bool, wanted: str | None
) -> str:
    """``wanted`` if given, else the manifest's default variant for the device if listed, else
    ``fp32``."""
    if wanted is not None and wanted not in manifest.variants:
        raise ModelLoadError(
            f"variant {wanted!r} is not in manifest.json (it lists {sorted(manifest.variants)})",
            path=model_dir / "manifest.json",
        )
    preferred = wanted or manifest.default_variant.get("cuda" if cuda else "cpu", "fp32")
    variant = preferred if preferred in manifest.variants else "fp32"
    if variant not in manifest.variants:
        raise ModelLoadError(
            f"manifest.json lists neither {preferred!r} nor 'fp32' variants; {FIX_HINT}",
            path=model_dir / "manifest.json",
        )
    return variant


def _open_session(
    model_dir: Path,
    manifest: RuntimeManifest,
    cuda: bool,
    intra_op_threads: int,
    wanted: str | None,
) -> tuple[ort.InferenceSession, str]:
    """An onnxruntime session on the device's variant, checked against the graph contract."""
    variant = _pick_variant(model_dir, manifest, cuda, wanted)
    path = check_model_file(model_dir, manifest.variants[variant], manifest)
    options = ort.SessionOptions()
    if intra_op_threads > 0:
        options.intra_op_num_threads = intra_op_threads
    providers = [_CUDA, _CPU] if cuda else [_CPU]
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own untyped exceptions
        raise ModelLoadError(
            f"onnxruntime cannot load {path} ({type(exc).__name__}: {exc}); {FIX_HINT}", path=path
        ) from exc
    unknown = [i.name for i in session.get_inputs() if i.name not in _KNOWN_INPUTS]
    outputs = session.get_outputs()
    if unknown or "input_ids" not in [i.name for i in session.get_inputs()] or not outputs:
        raise ModelLoadError(
            f"{path} does not fit the graph contract (inputs {list(_KNOWN_INPUTS)}, one logits "
            f"output); unexpected inputs {unknown}; {FIX_HINT}",
            path=path,
        )
    return session, variant
