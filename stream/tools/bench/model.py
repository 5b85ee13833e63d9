"""Measurements (a) and (b): the model alone and the classifier as the worker calls it.

- (a) model ceiling: onnxruntime ``session.run`` on batches tokenized beforehand, at the worker's
  batch size, cut into exactly the length-homogeneous sub-batches the worker's classifier runs
  (:meth:`SentimentClassifier.graph_calls`; a routed model's calls go to each text's route's
  graph). Only the ``run`` calls are timed.
- (b) classifier: :meth:`SentimentClassifier.predict_proba` on batches of raw texts, i.e.
  tokenization + onnxruntime + softmax, the call the worker makes for each micro-batch (the worker
  makes it on a one-thread executor; here it runs on the calling thread).

Both run once on one batch before timing (onnxruntime allocates its buffers on the first run).
Throughput is sequences per second of wall time over all batches.

Mixed sentiment (``rule`` given, as in the worker by default): each micro-batch of comments is
followed by the clauses of those comments (:class:`models.contract.mixed.ClauseBatch`), so (a) and
(b) run
exactly the sequences the worker's model calls run. :attr:`ClassifierRun.comments_per_s` and the
runner's (a) count comments per second (each with its clauses), the unit of the pipeline's events/s.

GPU options (``device="cuda"``): ``sort_by_length`` orders the texts by length before cutting
them into batches, so each batch pads less (the worker does not do this: it keeps Kafka order);
``io_binding`` (a only) copies each batch to the GPU before timing and binds the output on the GPU
(``InferenceSession.io_binding``), so the timed loop is the graph alone, without host-device
copies.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from models.contract.mixed import ClauseBatch, MixedRule
from models.contract.routing import GraphCall, LoadedModel

__all__ = [
    "ClassifierRun",
    "classifier_throughput",
    "encode_batches",
    "micro_batches",
    "model_throughput",
]

Batch = GraphCall
"""One timed onnxruntime run: the session and its int64 inputs."""

Model = LoadedModel


@dataclass(frozen=True)
class ClassifierRun:
    """One (b) measurement.

    Attributes:
        sequences_per_s: Model sequences (comments and their clauses) per second of wall time.
        median_batch_s: Median seconds of one ``predict_proba`` call.
        batch_size: Comments per call (the last batch may be smaller).
        comments_per_s: Comments per second (equal to ``sequences_per_s`` without clauses).
    """

    sequences_per_s: float
    median_batch_s: float
    batch_size: int
    comments_per_s: float


def _chunks(texts: Sequence[str], batch_size: int, sort_by_length: bool) -> list[list[str]]:
    if batch_size < 1 or not texts:
        raise ValueError("need at least one text and batch_size >= 1")
    ordered = sorted(texts, key=len) if sort_by_length else list(texts)
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]


def micro_batches(
    texts: Sequence[str],
    batch_size: int,
    *,
    sort_by_length: bool = False,
    rule: MixedRule | None = None,
) -> list[list[str]]:
    """The texts of each model call: ``batch_size`` comments, then (``rule`` given) their clauses.

    Raises:
        ValueError: ``texts`` is empty or ``batch_size`` < 1.
    """
    chunks = _chunks(texts, batch_size, sort_by_length)
    if rule is None:
        return chunks
    return [list(ClauseBatch.build(chunk, rule).texts) for chunk in chunks]


def encode_batches(
    classifier: Model,
    texts: Sequence[str],
    batch_size: int,
    *,
    sort_by_length: bool = False,
    rule: MixedRule | None = None,
) -> list[Batch]:
    """Tokenize ``texts`` into batches the way the worker does, for (a).

    Args:
        classifier: The loaded model (its tokenizer and ``max_seq_len``).
        texts: The comment texts, at least one.
        batch_size: Comments per batch (the last batch may be smaller).
        sort_by_length: Order texts by length (characters) first, to cut padding.
        rule: Mixed-sentiment rule: each batch also holds its comments' clauses.

    Returns:
        Per onnxruntime call, its session and inputs ``input_ids``, ``attention_mask``,
        ``token_type_ids`` (those the graph takes), int64, shape (rows, sequence_length): the
        sub-batches of each batch.

    Raises:
        ValueError: ``texts`` is empty or ``batch_size`` < 1.
    """
    chunks = micro_batches(texts, batch_size, sort_by_length=sort_by_length, rule=rule)
    return [call for chunk in chunks for call in classifier.graph_calls(chunk)]


def model_throughput(
    classifier: Model, batches: Sequence[Batch], *, io_binding: bool = False
) -> float:
    """(a) Sequences per second of ``session.run`` over pre-tokenized batches.

    Args:
        classifier: The loaded model; its onnxruntime sessions are timed.
        batches: From :func:`encode_batches`, at least one.
        io_binding: Bind inputs (copied to the device beforehand) and the output on the device
            (CUDA); False runs ``session.run`` on numpy arrays as the worker does.

    Returns:
        Sequences per second.

    Raises:
        ValueError: ``batches`` is empty.
    """
    if not batches:
        raise ValueError("need at least one batch")
    if io_binding:
        return _io_binding_throughput(batches, classifier.device)
    runs = [(session, [session.get_outputs()[0].name], dict(feeds)) for session, feeds in batches]
    warmed: set[int] = set()
    for session, output, feeds in runs:  # a session's first run allocates its buffers
        if id(session) not in warmed:
            session.run(output, feeds)
            warmed.add(id(session))
    sequences = sum(len(feeds["input_ids"]) for _, feeds in batches)
    start = time.perf_counter()
    for session, output, feeds in runs:
        session.run(output, feeds)
    return sequences / (time.perf_counter() - start)


def _io_binding_throughput(batches: Sequence[Batch], device: str) -> float:
    """Timed loop with inputs already on ``device`` and the output bound there."""
    import onnxruntime as ort

    kind = "cuda" if device == "cuda" else "cpu"
    bindings: list[tuple[Any, Any]] = []
    for session, feeds in batches:
        binding = session.io_binding()
        for name, array in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, kind, 0))
        binding.bind_output(session.get_outputs()[0].name, kind)
        bindings.append((session, binding))
    for session, binding in {id(s): (s, b) for s, b in bindings}.values():
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
    sequences = sum(len(feeds["input_ids"]) for _, feeds in batches)
    start = time.perf_counter()
    for session, binding in bindings:
        session.run_with_iobinding(binding)
    bindings[-1][1].synchronize_outputs()
    return sequences / (time.perf_counter() - start)


def classifier_throughput(
    classifier: Model,
    texts: Sequence[str],
    batch_size: int,
    *,
    sort_by_length: bool = False,
    rule: MixedRule | None = None,
) -> ClassifierRun:
    """(b) ``predict_proba`` on ``texts`` in batches of ``batch_size``.

    Args:
        classifier: The loaded model.
        texts: Raw comment texts, at least one.
        batch_size: Comments per call.
        sort_by_length: Order texts by length first (GPU option; the worker keeps Kafka order).
        rule: Mixed-sentiment rule: each call also classifies its comments' clauses.

    Returns:
        The :class:`ClassifierRun`.

    Raises:
        ValueError: ``texts`` is empty or ``batch_size`` < 1.
        InferenceError: onnxruntime failed on a batch.
    """
    chunks = micro_batches(texts, batch_size, sort_by_length=sort_by_length, rule=rule)
    classifier.predict_proba(chunks[0])
    durations = []
    start = time.perf_counter()
    for chunk in chunks:
        began = time.perf_counter()
        classifier.predict_proba(chunk)
        durations.append(time.perf_counter() - began)
    elapsed = time.perf_counter() - start
    sequences = sum(len(chunk) for chunk in chunks)
    return ClassifierRun(
        sequences / elapsed, statistics.median(durations), batch_size, len(texts) / elapsed
    )
