"""``portrait bench``: every measurement in one run, on the same texts, model and machine.

Phases, in order (each prints a progress line):

1. Threads: workers with ``intra_op_threads`` 1 and 2 start at once (their start-ups overlap).
   Calibration: one (c) burst of ``min_events`` on the first sets ``N`` = that rate x ``burst_s``
   (at most the available texts), so a run lasts about ``burst_s`` seconds whatever the machine;
   ``--events`` fixes ``N`` instead. Then each repeat measures (a), (b) and (c) for both thread
   counts on ``N/2`` events (time budget). The thread count with the higher median (c) is
   chosen: (c) runs the event loop, decoding, RocksDB and Kafka I/O beside onnxruntime, which (a)
   and (b) do not.
2. Repeats: the (d) worker joins (same settings, ``max_batch_size=1``); each repeat runs (a), (b),
   (c) and (d) on ``N`` events back to back, so each ratio c/a and c/d pairs runs that saw the
   same background load. (a) uses the thread count with the higher median (a) in phase 1: the
   ceiling is the model's best. Then shadow: the (c) worker and one with a candidate model in
   shadow run ``N`` events back to back per repeat (:mod:`stream.tools.bench.shadow`).
3. Latency: open loop on the (c) worker at each load fraction of (c)'s median capacity.
4. Sweep: (b) at every batch size on ``N/2`` texts; (c) with a worker per batch size (batch size
   1 is the (d) worker and the worker's default size the (c) worker: their medians are reused);
   then a worker per other ``max_wait_s``: one burst and one open-loop run at the first load
   fraction.
5. State: the state-only mode (:mod:`stream.tools.bench.state`) with the stored predictions of the
same
   ``N`` texts.

Why (d) is the same worker with ``max_batch_size=1`` and not a separate minimal faust agent: that
*is* the per-event agent (one model call, one table read and write, one profile update and one
broker confirmation per event), and everything else is identical (decode, dead-letter policy,
acknowledgement, metrics), so c/d isolates micro-batching. A hand-written agent would differ in
more than batching and would not be the code that ships.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from models.contract.mixed import MixedRule
from models.contract.routing import LoadedModel, load_model
from stream.settings import Settings
from stream.tools.bench.model import (
    classifier_throughput,
    encode_batches,
    micro_batches,
    model_throughput,
)
from stream.tools.bench.pipeline import BenchWorker, WorkerConfig, tagged_records
from stream.tools.bench.stats import Spread, paired_ratio
from stream.tools.bench.workload import Workload, worker_settings

__all__ = ["BenchOptions", "Bench"]

Echo = Callable[[str], None]


@dataclass(frozen=True)
class BenchOptions:
    """Options of ``portrait bench`` (see ``portrait bench --help``).

    Attributes:
        model_dir: Model directory; None = the settings' model (default the committed artifact).
        baseline_model_dir: A second model directory whose (a) is measured in the same repeats,
            on the same texts, paired with the model's (ratio ``a/a_baseline``); None = none.
        device: ``"cpu"`` or ``"cuda"``; ``"cuda"`` also sorts batches by length and uses I/O
            binding in (a).
        repeats: Repeats of (a), (b), (c), (d), >= 3 for the reported medians.
        burst_s: Target seconds of one (c) burst; sets ``N`` (see the module docstring). 20 s by
            default: each burst starts with a fixed wait for the first fetch (up to 0.75 s on the
            embedded broker), which a 6 s burst counts as ~10% lost throughput.
        events: ``N`` fixed; 0 = from ``burst_s``.
        min_events: Smallest ``N`` from ``burst_s``.
        batch_size: The worker's ``max_batch_size`` for (a) and (c).
        max_wait_s: The worker's ``max_wait_s`` for (c).
        threads: ``intra_op_threads`` candidates.
        sweep_sizes: Batch sizes of the sweep.
        max_waits: ``max_wait_s`` values compared.
        loads: Open-loop load fractions of (c)'s capacity.
        latency_s: Seconds of sending per open-loop run.
        state_users: Distinct users of the state-only mode; 0 skips it.
        state_only: Run only the state-only mode.
        phase_timeout_s: Seconds any one phase may take before the bench gives up.
        chinese_share: Share of the simulated users writing Chinese test reviews; 0 = English.
        shadow_model_dir: The candidate scored in shadow by the shadow phase
            (:mod:`stream.tools.bench.shadow`); None = a copy of the bench's model.
    """

    model_dir: Path | None = None
    baseline_model_dir: Path | None = None
    device: Literal["cpu", "cuda"] = "cpu"
    repeats: int = 3
    burst_s: float = 20.0
    events: int = 0
    min_events: int = 256
    batch_size: int = 64
    max_wait_s: float = 0.02
    threads: tuple[int, ...] = (1, 2)
    sweep_sizes: tuple[int, ...] = (1, 8, 16, 32, 64, 128)
    max_waits: tuple[float, ...] = (0.005, 0.02, 0.1)
    loads: tuple[float, ...] = (0.5, 0.8)
    latency_s: float = 12.0
    state_users: int = 50_000
    state_only: bool = False
    phase_timeout_s: float = 600.0
    chinese_share: float = 0.0
    shadow_model_dir: Path | None = None

    @property
    def gpu_extras(self) -> bool:
        """Length-sorted batches and I/O binding (device ``cuda`` only)."""
        return self.device == "cuda"

    def quick(self) -> BenchOptions:
        """These options cut down to a smoke run (about a minute with a tiny model): short
        bursts, batch sizes 1, 8 and 64, two ``max_wait_s`` values, 2 s of open loop, 500 users
        in the state-only mode. Every section is still produced, with 3 repeats."""
        return replace(self, burst_s=1.0, min_events=64, sweep_sizes=(1, 8, 64),
                       max_waits=(self.max_wait_s, 0.1), latency_s=2.0,
                       state_users=min(self.state_users, 500), phase_timeout_s=180.0)  # fmt: skip


@dataclass
class Bench:
    """One bench run: shared state of the phases; :meth:`run_phases` fills :attr:`results`.

    Args:
        settings: Base settings (topics layout, profile settings, log level...).
        options: The options.
        workload: The comment events.
        bootstrap: Bootstrap servers of the broker in use.
        work_dir: Temporary directory for worker logs and state.
        echo: Progress lines.
    """

    settings: Settings
    options: BenchOptions
    workload: Workload
    bootstrap: str
    work_dir: Path
    echo: Echo
    results: dict[str, Any] = field(default_factory=dict)
    events_n: int = 0
    _classifiers: dict[tuple[Path | None, int], LoadedModel] = field(default_factory=dict)
    _workers: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    # -- building blocks ------------------------------------------------------------------------
    def classifier(self, threads: int, model_dir: Path | None = None) -> LoadedModel:
        """A model with ``threads`` intra-op threads (loaded once per model and thread count);
        ``model_dir`` None = the bench's model."""
        if (model_dir, threads) not in self._classifiers:
            model = model_dir or self.options.model_dir or self.settings.model.path
            self._classifiers[model_dir, threads] = load_model(model, self.options.device, threads)
        return self._classifiers[model_dir, threads]

    @contextlib.contextmanager
    def shorter_runs(self, fraction: float) -> Iterator[int]:
        """Within the block, runs use ``fraction`` of the ``N`` events (at least ``min_events``);
        yields that count."""
        full = self.events_n
        self.events_n = min(full, max(self.options.min_events, round(full * fraction)))
        try:
            yield self.events_n
        finally:
            self.events_n = full

    def texts(self) -> list[str]:
        """The ``N`` texts of this run."""
        return self.workload.texts(self.events_n)

    @property
    def mixed_rule(self) -> MixedRule | None:
        """The worker's mixed-sentiment rule, or None when clause classification is off."""
        mixed = self.settings.mixed
        return MixedRule(mixed.threshold, mixed.max_clauses) if mixed.enabled else None

    def measure_a(self, threads: int, model_dir: Path | None = None) -> float:
        """(a) at the worker's batch size, comments/s (each with its clauses, as in the worker);
        ``model_dir`` None = the bench's model."""
        clf, extras = self.classifier(threads, model_dir), self.options.gpu_extras
        texts = self.texts()
        batches = encode_batches(clf, texts, self.options.batch_size, sort_by_length=extras,
                                 rule=self.mixed_rule)  # fmt: skip
        sequences = sum(len(feeds["input_ids"]) for _, feeds in batches)
        return model_throughput(clf, batches, io_binding=extras) * len(texts) / sequences

    def measure_b(self, threads: int, batch_size: int | None = None) -> Any:
        """(b) at ``batch_size`` (default the worker's), a :class:`ClassifierRun`."""
        size = batch_size or self.options.batch_size
        return classifier_throughput(self.classifier(threads), self.texts(), size,
                                     sort_by_length=self.options.gpu_extras,
                                     rule=self.mixed_rule)  # fmt: skip

    def sequences_per_comment(self) -> float:
        """Model sequences per comment of this run's texts (1 + clauses, when mixed is on)."""
        batches = micro_batches(self.texts(), self.options.batch_size, rule=self.mixed_rule)
        return sum(len(b) for b in batches) / len(self.texts())

    def worker(self, config: WorkerConfig, command: tuple[str, ...] | None = None) -> BenchWorker:
        """A started worker for ``config`` (stopped when the bench ends, or by ``.stop()``)."""
        settings = worker_settings(self.settings, config, bootstrap=self.bootstrap,
                                   work_dir=self.work_dir, model_dir=self.options.model_dir,
                                   device=self.options.device)  # fmt: skip
        worker = BenchWorker(
            config, settings, self.work_dir, **({"command": command} if command else {})
        )
        self._workers.callback(worker.stop)
        return worker

    def start_all(self, configs: list[WorkerConfig]) -> dict[str, BenchWorker]:
        """Start workers at once (their start-ups overlap), then warm each up."""
        workers = {c.name: self.worker(c) for c in configs}
        for worker in workers.values():
            worker.start()
        warm = list(self.workload.events[: self.options.batch_size])
        for worker in workers.values():
            worker.warm_up(warm, self.options.phase_timeout_s)
        return workers

    def burst(self, worker: BenchWorker, tag: str) -> float:
        """One (c)/(d) burst of the ``N`` events, events/s."""
        records = tagged_records(self.workload.events[: self.events_n], tag, worker.settings,
                                 self.events_n)  # fmt: skip
        return worker.burst(records, self.options.phase_timeout_s)

    def config(self, name: str, *, batch_size: int | None = None, max_wait_s: float | None = None,
               threads: int = 1, segments_path: Path | None = None,
               registry: Path | None = None) -> WorkerConfig:  # fmt: skip
        """A :class:`WorkerConfig` with the options' defaults."""
        return WorkerConfig(name, batch_size or self.options.batch_size,
                            max_wait_s or self.options.max_wait_s, threads,
                            segments_path, registry)  # fmt: skip

    @contextlib.contextmanager
    def workers_stopped_at_exit(self) -> Iterator[None]:
        """Stops every worker this bench started when the block ends."""
        with self._workers:
            yield


def median_of(spreads: dict[str, Spread]) -> dict[str, float]:
    """Median of each spread, by key."""
    return {key: spread.median for key, spread in spreads.items()}


def best(medians: dict[int, float]) -> int:
    """The key with the highest value (the lower key on a tie)."""
    return max(sorted(medians), key=lambda key: medians[key])


def paired(numerators: list[float], denominators: list[float]) -> dict[str, Any]:
    """:func:`paired_ratio` as a JSON-ready dict."""
    return paired_ratio(numerators, denominators).to_dict()


def mean(values: list[float]) -> float:
    """Arithmetic mean (for the progress lines)."""
    return statistics.fmean(values)
