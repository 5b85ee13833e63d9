"""Stored predictions in place of the model: the classifier of the bench's state-only mode.

The state-only mode measures the profile table alone (aggregation, RocksDB, changelog, emit), so
the model must cost nothing. :class:`StoredPredictions` answers ``predict_proba`` from a file of
probabilities that the real model computed beforehand for the same texts (keyed by the SHA-256 of
each text), so the profiles hold the real model's scores without running it.

The seam is the ``classifier`` argument of :func:`stream.worker.run_worker`: :func:`main` is a
separate worker entry point
(``python -c "from stream.tools.bench.stored import main; main()" FILE``)
that builds the settings from ``PORTRAIT_...`` variables like ``portrait worker`` and hands this
classifier in. Nothing in the production worker, its settings or its model loading knows about
stored predictions, so no setting can switch a production worker to them; a text that is not in
the file fails like a model error (:class:`~models.contract.errors.InferenceError`, dead-lettered).

File format (JSON, written by :func:`write_predictions`)::

    {"format": "portrait-stored-predictions/1", "model_version": "...", "labels": [...],
     "predictions": {"<sha256 of the UTF-8 text>": [p_negative, p_neutral, p_positive], ...}}
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from models.contract.errors import ConfigError, InferenceError, ModelLoadError
from stream.settings import load_settings
from stream.worker import run_worker

__all__ = [
    "FORMAT",
    "PROVIDER",
    "StoredPredictions",
    "main",
    "text_key",
    "worker_command",
    "write_predictions",
]

logger = logging.getLogger(__name__)

FORMAT = "portrait-stored-predictions/1"
"""``format`` field of a predictions file."""

PROVIDER = "stored-predictions"
"""The ``provider`` a :class:`StoredPredictions` reports (and the worker's model-info metric)."""


def text_key(text: str) -> str:
    """The lookup key of a text: hex SHA-256 of its UTF-8 bytes (lone surrogates passed through)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def write_predictions(
    path: Path,
    texts: Sequence[str],
    probabilities: NDArray[np.float32],
    *,
    model_version: str,
    labels: Sequence[str],
) -> Path:
    """Write a predictions file for ``texts``.

    Args:
        path: The file to write.
        texts: The texts, in row order of ``probabilities``.
        probabilities: float32, shape (batch_size, num_labels), rows sum to 1: the real model's
            ``predict_proba`` of ``texts``.
        model_version: Version of the model that computed them.
        labels: Class names in column order.

    Returns:
        ``path``.

    Raises:
        ValueError: ``probabilities`` does not have one row per text and one column per label.
    """
    if probabilities.shape != (len(texts), len(labels)):
        raise ValueError(
            f"probabilities shape {probabilities.shape}, expected ({len(texts)}, {len(labels)})"
        )
    table = {
        text_key(t): [float(p) for p in row] for t, row in zip(texts, probabilities, strict=True)
    }
    payload = {"format": FORMAT, "model_version": model_version, "labels": list(labels),
               "predictions": table}  # fmt: skip
    path.write_text(json.dumps(payload), encoding="utf-8")
    return path


class StoredPredictions:
    """A :class:`~models.contract.classifier.Classifier` that looks probabilities up instead of
    computing.

    Args:
        predictions: text key (:func:`text_key`) -> probabilities in ``labels`` order.
        model_version: Reported as ``<model_version>+stored-predictions``.
        labels: Class names in column order.

    Attributes:
        labels: Class names in column order.
        model_version: The source model's version with ``+stored-predictions`` appended, so every
            profile update says its scores came from stored predictions.
        provider: :data:`PROVIDER`.
        device: ``"cpu"``.
    """

    def __init__(
        self, predictions: Mapping[str, Sequence[float]], model_version: str, labels: Sequence[str]
    ) -> None:
        self._table = {k: np.asarray(v, dtype=np.float32) for k, v in predictions.items()}
        self.labels = tuple(labels)
        self.model_version = f"{model_version}+{PROVIDER}"
        self.provider = PROVIDER
        self.device = "cpu"

    @classmethod
    def load(cls, path: Path) -> StoredPredictions:
        """Read a file written by :func:`write_predictions`.

        Raises:
            ModelLoadError: The file is missing, not JSON, or not in :data:`FORMAT`.
        """
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
            if raw.get("format") != FORMAT:
                raise ValueError(f"format is {raw.get('format')!r}, expected {FORMAT!r}")
            return cls(raw["predictions"], str(raw["model_version"]), raw["labels"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelLoadError(
                f"{path} is not a stored-predictions file ({type(exc).__name__}: {exc}); "
                "`portrait bench` writes one",
                path=Path(path),
            ) from exc

    def __len__(self) -> int:
        return len(self._table)

    def predict_proba(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """The stored probabilities of ``texts``.

        Returns:
            float32 probabilities, shape (batch_size, num_labels), input order.

        Raises:
            InferenceError: A text has no stored prediction (the worker dead-letters it).
        """
        rows = []
        for text in texts:
            row = self._table.get(text_key(text))
            if row is None:
                raise InferenceError("no stored prediction for a text of this batch")
            rows.append(row)
        if not rows:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return np.stack(rows)


def worker_command(predictions: Path) -> tuple[str, ...]:
    """The command line of a worker that uses ``predictions`` (for ``WorkerProcess(command=)``)."""
    code = "from stream.tools.bench.stored import main; main()"
    return (sys.executable, "-c", code, str(predictions))


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``portrait worker`` with :class:`StoredPredictions` from the file named in ``argv``.

    Settings come from ``PORTRAIT_...`` variables exactly as for ``portrait worker``.

    Raises:
        SystemExit: Code 2 without a file argument, or when the file or a setting is invalid.
    """

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        sys.stderr.write("usage: stored-predictions worker PREDICTIONS_FILE\n")
        raise SystemExit(2)
    try:
        settings = load_settings()
        classifier = StoredPredictions.load(Path(args[0]))
    except (ConfigError, ModelLoadError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        raise SystemExit(2) from exc
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("faust.topics").setLevel(logging.INFO)  # never log record values
    logger.info("stored-predictions worker texts=%d (the model is not run)", len(classifier))
    run_worker(settings, classifier=classifier)
