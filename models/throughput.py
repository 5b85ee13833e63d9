"""CPU throughput of an exported model's graphs through the worker's runtime (``portrait evaluate
--throughput``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from models.contract.manifest import read_manifest
from models.contract.routing import load_model, routing_of

__all__ = ["throughput"]


def throughput(
    model_dir: Path,
    texts: Sequence[str],
    *,
    variants: Sequence[str] | None = None,
    batch_sizes: Sequence[int] = (1, 8, 32, 64),
    min_seconds: float = 3.0,
) -> list[dict[str, float | int | str]]:
    """onnxruntime CPU throughput of each graph, tokenization included, on real texts.

    For each (variant, batch size), consecutive batches of ``texts`` are classified through the
    worker's runtime for at least ``min_seconds`` (after one warm-up batch). ``variants``
    defaults to the CPU graphs (fp32, int8) that the directory's manifest lists.

    Returns:
        Rows ``{"variant", "batch_size", "sequences_per_s", "batches"}``.

    Raises:
        ModelLoadError: a variant is not in the directory's manifest.
    """
    chosen: Sequence[str | None]
    if variants is not None:
        chosen = variants
    elif routing_of(model_dir) is not None:
        chosen = [None]  # a routed model: each route's default graph
    else:
        chosen = [v for v in ("fp32", "int8") if v in read_manifest(model_dir)["variants"]]
    rows: list[dict[str, float | int | str]] = []
    for variant in chosen:
        clf = load_model(model_dir, device="cpu", variant=variant)
        for size in batch_sizes:
            batches = [texts[i : i + size] for i in range(0, len(texts) - size + 1, size)]
            clf.predict_logits(batches[0])
            done, n, started = 0, 0, time.perf_counter()
            while time.perf_counter() - started < min_seconds:
                done += len(clf.predict_logits(batches[n % len(batches)]))
                n += 1
            rate = done / (time.perf_counter() - started)
            rows.append(
                {
                    "variant": clf.variant,
                    "batch_size": size,
                    "sequences_per_s": round(rate, 1),
                    "batches": n,
                }
            )
    return rows
