"""The throughput cost of shadow scoring: (c) with and without a staged candidate, paired.

A worker started with a model registry (:mod:`stream.model_registry`) whose pointer names a live
model and a candidate scores every comment micro-batch with the candidate too, on its own thread
after the live verdicts (:mod:`stream.shadow`); a batch offered while the candidate is still busy
is skipped, so the live path never waits for it, but on a machine with few cores the candidate's
thread takes CPU from the live path. This phase measures that: the (c) worker (no registry) and a
worker identical but for the registry run the same ``N`` events back to back in each repeat, and
the cost is ``1 - median(shadow_i / c_i)`` over the paired repeats
(:func:`stream.tools.bench.stats.paired_ratio`). It also reads how many comments the candidate
scored and skipped (the worker's ``portrait_shadow_*`` counters), since a cheap shadow that skips
most batches measures little.

The candidate defaults to a copy of the bench's own model under another version name: a
retrained candidate usually has the live model's architecture, so this is the cost an operator
pays while a retrained model is in shadow.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from models.contract.manifest import read_manifest
from stream.model_registry import Registry
from stream.tools.bench.pipeline import BenchWorker
from stream.tools.bench.runner import Bench, paired
from stream.tools.bench.state import scrape_counter
from stream.tools.bench.stats import Spread

__all__ = ["shadow_phase", "shadow_registry"]

SHADOW_SUFFIX = "-shadow-copy"
"""Appended to the live model's version to name the default candidate."""


def shadow_registry(root: Path, live: Path, candidate: Path | None = None) -> tuple[Path, str]:
    """A registry under ``root`` with ``live`` promoted and ``candidate`` staged.

    Args:
        root: An empty directory for the registry.
        live: The bench's model directory.
        candidate: The candidate's model directory; None = a copy of ``live`` whose manifest
            names the version ``<live version>-shadow-copy`` (files unchanged).

    Returns:
        The registry directory and the candidate's version.

    Raises:
        RegistryError: A model failed the registry's checks.
    """
    registry = Registry(root / "registry")
    registry.stage(live)
    registry.promote()
    if candidate is None:
        candidate = root / "candidate"
        shutil.copytree(live, candidate)
        manifest = read_manifest(candidate)
        manifest["model_version"] = f"{manifest['model_version']}{SHADOW_SUFFIX}"
        (candidate / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return registry.root, registry.stage(candidate)


def shadow_phase(bench: Bench, threads: int, c_worker: BenchWorker) -> None:
    """Paired (c) bursts without and with a candidate in shadow; ``results["shadow"]``."""
    options = bench.options
    live = options.model_dir or bench.settings.model.resolved_path
    root, version = shadow_registry(bench.work_dir / "shadow", live, options.shadow_model_dir)
    config = bench.config("shadow", threads=threads, registry=root)
    worker = bench.start_all([config])["shadow"]
    port = worker.settings.metrics_port
    scored_before = scrape_counter(port, "portrait_shadow_events") or 0.0
    skipped_before = scrape_counter(port, "portrait_shadow_skipped") or 0.0
    without, with_shadow = [], []
    for repeat in range(options.repeats):
        without.append(bench.burst(c_worker, f"shadow-off-{repeat}"))
        with_shadow.append(bench.burst(worker, f"shadow-on-{repeat}"))
        bench.echo(f"shadow: repeat {repeat + 1}/{options.repeats} c {without[-1]:.0f}, with a "
                   f"candidate in shadow {with_shadow[-1]:.0f} events/s")  # fmt: skip
    scored = (scrape_counter(port, "portrait_shadow_events") or 0.0) - scored_before
    skipped = (scrape_counter(port, "portrait_shadow_skipped") or 0.0) - skipped_before
    failures = scrape_counter(port, "portrait_shadow_failures")
    worker.stop()
    ratio = paired(with_shadow, without)
    bench.results["shadow"] = {
        "unit": "events/s", "events_per_run": bench.events_n, "candidate": version,
        "c": Spread.of(without).to_dict(), "c_shadow": Spread.of(with_shadow).to_dict(),
        "cost_share": 1.0 - ratio["median"],
        "cost_share_spread": {"min": 1.0 - ratio["max"], "max": 1.0 - ratio["min"]},
        "comments_scored_in_shadow": scored, "comments_skipped": skipped,
        "scored_share": scored / (scored + skipped) if scored + skipped else None,
        "shadow_failures": failures, "worker": config.describe(),
        "pairing": "repeat i of each side, run back to back",
    }  # fmt: skip
