"""Routed model: each text goes to the graph that reads its script.

One graph for every language is the aim; where no single exported graph holds every language's
quality floor (measured: the bilingual e5 graphs reach English macro-F1 0.795-0.797 in int8, under
the English model's floor of 0.803, while the English model reads Chinese as neutral), the model
directory holds one graph per script and a routing rule in its ``manifest.json``::

    manifest.json     model_version, labels, routing {rule, threshold, routes {latin, other}}
    <route>/          a complete model directory (``portrait export`` / ``portrait model route``)

The rule (``non-latin-letter-share``): of a text's letters (Unicode letters, digits and
punctuation excluded; the first :data:`ROUTING_PREFIX_CHARS` characters), the share outside the
Latin blocks (U+0000-U+024F, U+1E00-U+1EFF). A share at or above ``threshold`` sends the text to
the ``other`` route (the multilingual graph: Chinese, Japanese, Korean, Cyrillic...), below it to
the ``latin`` route; a text without letters goes to ``latin``. A mixed-language comment ("这个手机
good but 太贵") goes whole to the multilingual graph, which reads both; the clauses of a mixed
comment are routed one by one, as any text. The rule is a pure function of the text, so a verdict
still depends on its own text alone (never on its micro-batch).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from models.contract.classifier import Device, SentimentClassifier, softmax_rows
from models.contract.errors import ModelLoadError
from models.contract.manifest import DEFAULT_MODEL_DIR, file_sha256

__all__ = [
    "ROUTES",
    "ROUTING_PREFIX_CHARS",
    "RULE",
    "GraphCall",
    "LoadedModel",
    "RoutedClassifier",
    "load_model",
    "non_latin_share",
    "routing_of",
]

ROUTES = ("latin", "other")
"""Route names, in the order their graphs run."""

ROUTING_PREFIX_CHARS = 512
"""Characters of a text the rule looks at (bounds its work on huge texts)."""

RULE = "non-latin-letter-share"

_LETTER = re.compile(r"[^\W\d_]")
_NON_LATIN_LETTER = re.compile(r"[^\W\d_A-Za-z\u00c0-\u024f\u1e00-\u1eff]")

GraphCall = tuple[ort.InferenceSession, dict[str, NDArray[np.int64]]]
"""One onnxruntime run the runtime makes: the session and its int64 inputs, shape
(rows, sequence_length)."""


def non_latin_share(text: str) -> float:
    """Share of the letters in ``text[:ROUTING_PREFIX_CHARS]`` outside the Latin blocks.

    Returns:
        A float in [0, 1]; 0.0 for a text without letters.
    """
    head = text[:ROUTING_PREFIX_CHARS]
    letters = len(_LETTER.findall(head))
    return len(_NON_LATIN_LETTER.findall(head)) / letters if letters else 0.0


@dataclass(frozen=True)
class Routing:
    """The ``routing`` object of a routed manifest.

    Attributes:
        threshold: Non-Latin letter share at or above which a text takes the ``other`` route.
        routes: Route name (``latin``, ``other``) -> model directory name, relative to the
            routed directory.
    """

    threshold: float
    routes: dict[str, str]

    def route_of(self, text: str) -> str:
        """``"other"`` when the text's non-Latin letter share reaches the threshold, else
        ``"latin"``."""
        return "other" if non_latin_share(text) >= self.threshold else "latin"


def _read(model_dir: Path) -> dict[str, Any]:
    """``model_dir/manifest.json`` as a dict, or :class:`ModelLoadError`."""
    path = model_dir / "manifest.json"
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError as exc:
        raise ModelLoadError(f"{path} is missing", path=path) from exc
    except (OSError, ValueError, TypeError) as exc:
        raise ModelLoadError(f"{path} is not valid JSON ({exc})", path=path) from exc


def _parse_routing(raw: dict[str, Any], path: Path) -> Routing | None:
    """The ``routing`` of a manifest read from ``path``; ``None`` when it has none."""
    if "routing" not in raw:
        return None
    try:
        spec = raw["routing"]
        if spec["rule"] != RULE:
            raise ValueError(f"unknown rule {spec['rule']!r} (known: {RULE!r})")
        routes = {str(k): str(v) for k, v in spec["routes"].items()}
        if sorted(routes) != sorted(ROUTES):
            raise ValueError(f"routes must be exactly {list(ROUTES)}, got {sorted(routes)}")
        threshold = float(spec["threshold"])
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelLoadError(f"{path}: invalid routing ({exc})", path=path) from exc
    return Routing(threshold=threshold, routes=routes)


def routing_of(model_dir: Path) -> Routing | None:
    """The routing of ``model_dir/manifest.json``; ``None`` for a single-graph model.

    Raises:
        ModelLoadError: the manifest is missing, not JSON, or its routing is malformed.
    """
    return _parse_routing(_read(model_dir), model_dir / "manifest.json")


class RoutedClassifier:
    """Several :class:`SentimentClassifier` graphs behind one classifier, chosen per text.

    Satisfies :class:`models.contract.classifier.Classifier`. Build it with :func:`load_model`.

    Attributes:
        labels: Class names in probability-column order (the same in every route).
        model_version: The routed manifest's ``model_version``.
        provider: The onnxruntime provider of the routes (the same device for all).
        device: ``"cpu"`` or ``"cuda"``.
        variant: The graph variant in use, ``"+"``-joined when the routes differ.
        max_seq_len: The longest ``max_seq_len`` of the routes (tokens).
        routes: Route name -> its classifier.
        routing: The rule and its threshold.
    """

    def __init__(
        self, model_version: str, routing: Routing, routes: dict[str, SentimentClassifier]
    ) -> None:
        labels = {clf.labels for clf in routes.values()}
        if len(labels) != 1:
            raise ValueError(f"routes disagree on labels: {sorted(labels)}")
        self.labels = next(iter(labels))
        self.model_version = model_version
        self.routing = routing
        self.routes = routes
        self.provider = routes[ROUTES[0]].provider
        self.device = routes[ROUTES[0]].device
        self.variant = "+".join(sorted({clf.variant for clf in routes.values()}))
        self.max_seq_len = max(clf.max_seq_len for clf in routes.values())

    def route(self, texts: Sequence[str]) -> list[str]:
        """Each text's route name, in input order.

        Raises:
            TypeError: An item of ``texts`` is not a ``str``.
        """
        out = []
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"texts must be str, got {type(text).__name__}")
            out.append(self.routing.route_of(text))
        return out

    def _groups(self, texts: Sequence[str]) -> list[tuple[SentimentClassifier, list[int]]]:
        names = self.route(texts)
        groups = []
        for name in ROUTES:
            rows = [i for i, n in enumerate(names) if n == name]
            if rows:
                groups.append((self.routes[name], rows))
        return groups

    def predict_logits(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Logits of each text from its own route's graph, in input order.

        Returns:
            float32, shape (batch_size, num_labels); (0, num_labels) for no texts.

        Raises:
            TypeError: An item of ``texts`` is not a ``str``.
            InferenceError: onnxruntime failed on a sub-batch of a route.
        """
        logits = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for clf, rows in self._groups(texts):
            logits[rows] = clf.predict_logits([texts[i] for i in rows])
        return logits

    def predict_proba(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Class probabilities, in input order (see :meth:`SentimentClassifier.predict_proba`).

        Returns:
            float32, shape (batch_size, num_labels), rows sum to 1.

        Raises:
            TypeError: An item of ``texts`` is not a ``str``.
            InferenceError: onnxruntime failed on a sub-batch of a route.
        """
        return softmax_rows(self.predict_logits(texts))

    def graph_calls(self, texts: Sequence[str]) -> list[GraphCall]:
        """The onnxruntime runs :meth:`predict_logits` makes for ``texts``, route by route."""
        return [
            call
            for clf, rows in self._groups(texts)
            for call in clf.graph_calls([texts[i] for i in rows])
        ]


LoadedModel = SentimentClassifier | RoutedClassifier
"""What :func:`load_model` returns."""


def load_model(
    model_dir: Path | None = None,
    device: Device = "auto",
    intra_op_threads: int = 0,
    variant: str | None = None,
) -> LoadedModel:
    """Load a model directory: one graph (:class:`SentimentClassifier`) or routed graphs.

    Args:
        model_dir: The directory; ``None`` = the committed artifact ``models/artifact``.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``, for every route.
        intra_op_threads: onnxruntime intra-op threads per session; 0 = onnxruntime's default.
        variant: A graph variant every route lists; ``None`` = each manifest's default.

    Raises:
        DeviceUnavailableError: ``device="cuda"`` and onnxruntime cannot use CUDA here.
        ModelLoadError: A directory, manifest, tokenizer or graph is missing or corrupt, the
            routing is malformed, or the routes disagree on labels.
    """
    path = Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR
    if not (path / "manifest.json").is_file():
        return SentimentClassifier.load(path, device, intra_op_threads, variant)  # its error
    raw = _read(path)  # read once: the routing, the pinned route manifests, the version
    routing = _parse_routing(raw, path / "manifest.json")
    if routing is None:
        return SentimentClassifier.load(path, device, intra_op_threads, variant)
    for name, expected in dict(raw.get("files", {})).items():
        if not (path / name).is_file() or file_sha256(path / name) != expected:
            raise ModelLoadError(
                f"{path / name} is missing or does not match the sha256 in {path}/manifest.json "
                "(a route was replaced); rebuild it with `portrait route`",
                path=path / name,
            )
    routes = {
        name: SentimentClassifier.load(path / sub, device, intra_op_threads, variant)
        for name, sub in routing.routes.items()
    }
    try:
        return RoutedClassifier(str(raw.get("model_version", path.name)), routing, routes)
    except ValueError as exc:
        raise ModelLoadError(f"{path}: {exc}", path=path / "manifest.json") from exc
