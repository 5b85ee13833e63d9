"""The phases of ``portrait bench`` (see :mod:`stream.tools.bench.runner` for the order and the
why).

Every phase reads and writes :attr:`Bench.results`, the dict that becomes the JSON file.
Throughputs are events (or sequences) per second; latencies and times are seconds.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stream.settings import Settings
from stream.tools.bench.model import micro_batches
from stream.tools.bench.pipeline import BenchWorker, tagged_records
from stream.tools.bench.runner import Bench, BenchOptions, Echo, best, paired
from stream.tools.bench.shadow import shadow_phase
from stream.tools.bench.state import STATE_SEGMENTS, run_state, write_bench_segments
from stream.tools.bench.stats import Spread, paired_ratio
from stream.tools.bench.stored import worker_command, write_predictions
from stream.tools.bench.workload import Workload, bench_broker, load_workload

__all__ = ["run_bench"]

_TANSU_NOTE = (
    "embedded Tansu broker: measured here, an aiokafka fetch on it returns only after about half "
    "of fetch_max_wait_ms even when records arrive sooner (kafka-python fetches return at once); "
    "faust fixes fetch_max_wait_ms=1500 for its consumer, so each event waits 0-0.75 s before the "
    "worker sees it. Latency percentiles here include that wait; a real Kafka broker answers a "
    "fetch when data arrives."
)
_THREADS_SHARE = 0.5
"""Share of the ``N`` events per run in the thread comparison and the (b) sweep (time budget)."""


def calibrate(bench: Bench, worker: BenchWorker | None) -> None:
    """Set ``bench.events_n``: ``--events``; else (c)'s rate on ``min_events`` x ``burst_s``;
    all texts without a worker (state-only mode)."""
    options, available = bench.options, len(bench.workload.events)
    if options.events or worker is None:
        bench.events_n = min(options.events or available, available)
        return
    bench.events_n = min(options.min_events, available)
    rate = bench.burst(worker, "calibrate")
    bench.events_n = max(bench.events_n, min(available, round(rate * options.burst_s)))
    bench.echo(f"calibrate: (c) ~{rate:.0f} events/s -> {bench.events_n} events per run")


def threads_phase(bench: Bench) -> tuple[int, int, BenchWorker]:
    """(a), (b), (c) for each thread count; returns (chosen for c, best for a, c worker)."""
    options = bench.options
    configs = [bench.config(f"c-t{t}", threads=t) for t in options.threads]
    workers = bench.start_all(configs)
    calibrate(bench, workers[configs[0].name])
    a: dict[int, list[float]] = {t: [] for t in options.threads}
    b: dict[int, list[float]] = {t: [] for t in options.threads}
    c: dict[int, list[float]] = {t: [] for t in options.threads}
    with bench.shorter_runs(_THREADS_SHARE) as events:
        for repeat in range(options.repeats):
            _threads_repeat(bench, workers, repeat, a, b, c)
    c_med = {t: Spread.of(v).median for t, v in c.items()}
    chosen, for_a = best(c_med), best({t: Spread.of(v).median for t, v in a.items()})
    for t in options.threads:
        if t != chosen:
            workers[f"c-t{t}"].stop()
    bench.results["threads"] = {
        "candidates": list(options.threads), "events_per_run": events,
        **{name: {str(t): Spread.of(v).to_dict() for t, v in series.items()}
           for name, series in (("a", a), ("b", b), ("c", c))},
        "chosen": chosen, "a_ceiling_threads": for_a,
        "why": _why(chosen, c_med),
    }  # fmt: skip
    return chosen, for_a, workers[f"c-t{chosen}"]


def _threads_repeat(bench: Bench, workers: dict[str, BenchWorker], repeat: int,
                    *series: dict[int, list[float]]) -> None:  # fmt: skip
    """One repeat of (a), (b), (c) for every thread count, appended to ``series`` (a, b, c)."""
    a, b, c = series
    for t in bench.options.threads:
        a[t].append(bench.measure_a(t))
        b[t].append(bench.measure_b(t).comments_per_s)
        c[t].append(bench.burst(workers[f"c-t{t}"], f"threads-{repeat}"))
    measured = "  ".join(f"t={t}: a {a[t][-1]:.0f} b {b[t][-1]:.0f} c {c[t][-1]:.0f}"
                         for t in bench.options.threads)  # fmt: skip
    bench.echo(f"threads: repeat {repeat + 1}/{bench.options.repeats} {measured}")


def _why(chosen: int, c_med: dict[int, float]) -> str:
    others = ", ".join(f"{c_med[t]:.0f} with {t}" for t in c_med if t != chosen)
    return (
        f"intra_op_threads={chosen}: the whole pipeline (c) ran at a median "
        f"{c_med[chosen]:.0f} events/s ({others}). The worker runs onnxruntime on a one-thread "
        f"executor beside the event loop; on {os.cpu_count()} cores, more intra-op threads "
        f"win only if they beat the CPU they take from decoding, RocksDB and Kafka I/O "
        f"(onnxruntime's default is one thread per physical core)."
    )


def repeats_phase(bench: Bench, chosen: int, for_a: int, c_worker: BenchWorker) -> None:
    """Paired repeats of (a), (b), (c), (d); ratios c/a and c/d."""
    options = bench.options
    d_config = bench.config("d", batch_size=1, threads=chosen)
    d_worker = bench.start_all([d_config])["d"]
    a, b, c, d, a_base = [], [], [], [], []
    batch_s = []
    baseline = options.baseline_model_dir
    for repeat in range(options.repeats):
        a.append(bench.measure_a(for_a))
        if baseline is not None:
            a_base.append(bench.measure_a(for_a, baseline))
        run = bench.measure_b(chosen)
        b.append(run.comments_per_s)
        batch_s.append(run.median_batch_s)
        c.append(bench.burst(c_worker, f"c-{repeat}"))
        d.append(bench.burst(d_worker, f"d-{repeat}"))
        bench.echo(f"repeats: {repeat + 1}/{options.repeats} a {a[-1]:.0f}  b {b[-1]:.0f}  "
                   f"c {c[-1]:.0f}  d {d[-1]:.0f} events/s")  # fmt: skip
    d_worker.stop()
    bench.results["throughput"] = {
        "unit": "events/s (a, b: comments/s, each comment with its clauses classified too)",
        "events_per_run": bench.events_n,
        "mixed": bench.settings.mixed.model_dump(),
        "sequences_per_comment": bench.sequences_per_comment(),
        "a": Spread.of(a).to_dict(), "b": Spread.of(b).to_dict(),
        "c": Spread.of(c).to_dict(), "d": Spread.of(d).to_dict(),
        "a_threads": for_a, "worker": c_worker.config.describe(), "baseline": d_config.describe(),
        "baseline_is": "the same worker with max_batch_size=1: one model call, one table write "
                       "and one profile update per event (the per-event agent)",
        "median_batch_inference_s": Spread.of(batch_s).median,
    }  # fmt: skip
    bench.results["ratios"] = {"c/a": paired(c, a), "c/d": paired(c, d),
                               "pairing": "repeat i of each side, run back to back"}  # fmt: skip
    if baseline is not None:
        base = bench.classifier(for_a, baseline)
        bench.results["throughput"]["a_baseline"] = {
            **Spread.of(a_base).to_dict(), "model": base.model_version, "path": str(baseline),
        }  # fmt: skip
        bench.results["ratios"]["a/a_baseline"] = paired(a, a_base)


def latency_phase(bench: Bench, worker: BenchWorker) -> None:
    """Open-loop runs at each load fraction of (c)'s median capacity."""
    capacity = bench.results["throughput"]["c"]["median"]
    runs = [
        _open_loop(bench, worker, capacity, load, f"lat-{load:g}") for load in bench.options.loads
    ]
    batch_s = bench.results["throughput"]["median_batch_inference_s"]
    bound = bench.options.max_wait_s + 3 * batch_s
    bench.results["latency"] = {
        "capacity_per_s": capacity, "runs": runs, "worker": worker.config.describe(),
        "p99_bound_s": bound, "p99_bound_is": "max_wait_s + 3 x median batch inference time (b)",
        "definition": "per event: receipt of the first profile update covering its offset - "
                      "the wall time the producer sent it",
    }  # fmt: skip


def _open_loop(bench: Bench, worker: BenchWorker, capacity: float, load: float,
               tag: str) -> dict[str, Any]:  # fmt: skip
    rate = max(1.0, capacity * load)
    count = max(1, round(rate * bench.options.latency_s))
    records = tagged_records(bench.workload.events, tag, worker.settings, count)
    result = worker.open_loop(records, rate, bench.options.phase_timeout_s)
    bench.echo(f"latency: load {load:.0%} ({rate:.0f}/s, {worker.config.name}) p50 "
               f"{result.latency_s['p50']:.3f} s p99 {result.latency_s['p99']:.3f} s")  # fmt: skip
    return {"load": load, **asdict(result)}


def sweep_phase(bench: Bench, chosen: int) -> None:
    """Batch-size sweep of (b) and (c), then the effect of ``max_wait_s``.

    Every configuration gets a fresh worker in this phase (all started at once), none is reused
    from the earlier phases, so the sweep's points saw the same conditions; runs use ``N/2``
    events. The worker with the default batch size and ``max_wait_s`` serves both lists.
    """
    options = bench.options
    size, wait = options.batch_size, options.max_wait_s
    with bench.shorter_runs(_THREADS_SHARE) as events:
        b_sweep = {str(s): bench.measure_b(chosen, s).comments_per_s for s in options.sweep_sizes}
        keys = [(s, wait) for s in options.sweep_sizes] + [(size, w) for w in options.max_waits]
        configs = {(s, w): bench.config(f"bs{s}-wait{w:g}", batch_size=s, max_wait_s=w,
                                        threads=chosen) for s, w in keys}  # fmt: skip
        started = bench.start_all(list(configs.values()))
        workers = {key: started[config.name] for key, config in configs.items()}
        rates: dict[tuple[int, float], float] = {}
        for key in dict.fromkeys(keys):
            rates[key] = bench.burst(workers[key], "sweep")
            bench.echo(f"sweep: batch size {key[0]}, max_wait_s {key[1]:g}: c {rates[key]:.0f} "
                       f"events/s")  # fmt: skip
        bench.results["batch_sweep"] = {
            "b": b_sweep, "c": {str(s): rates[(s, wait)] for s in options.sweep_sizes},
            "runs_per_size": 1, "events_per_run": events, "max_wait_s": wait,
        }  # fmt: skip
        bench.results["max_wait"] = [_max_wait_run(bench, workers[(size, w)], w, rates[(size, w)])
                                     for w in options.max_waits]  # fmt: skip
    for worker in workers.values():
        worker.stop()


def _max_wait_run(bench: Bench, worker: BenchWorker, wait: float, rate: float) -> dict[str, Any]:
    capacity = bench.results["throughput"]["c"]["median"]
    latency = _open_loop(bench, worker, capacity, bench.options.loads[0], f"wait-lat-{wait:g}")
    return {"max_wait_s": wait, "c_events_per_s": rate, "latency": latency}


def state_phase(bench: Bench, threads: int) -> None:
    """The state-only mode with the stored predictions of the ``N`` texts."""
    classifier = bench.classifier(threads)
    texts = bench.texts()
    # the comments and (mixed detection on) their clauses: every text the worker will ask for
    stored = list(dict.fromkeys(
        t for batch in micro_batches(texts, bench.options.batch_size, rule=bench.mixed_rule)
        for t in batch
    ))  # fmt: skip
    path = write_predictions(
        bench.work_dir / "stored-predictions.json", stored, classifier.predict_proba(stored),
        model_version=classifier.model_version, labels=classifier.labels,
    )  # fmt: skip
    users = bench.options.state_users
    bench.echo(f"state: {users} distinct users, stored predictions of {len(texts)} comments"
               f" and their clauses ({len(stored)} texts); without segments, with "
               f"{STATE_SEGMENTS}, then their conditions alone (no profile enters)")  # fmt: skip
    timeout_s = max(bench.options.phase_timeout_s, users / 100)
    events = bench.workload.events[: bench.events_n]
    segments = write_bench_segments(bench.work_dir / "segments.json", STATE_SEGMENTS)
    conditions = write_bench_segments(bench.work_dir / "conditions.json", STATE_SEGMENTS,
                                      crossing=False)  # fmt: skip
    names = {"state": ("state", None), "state_segments": ("state-seg", segments),
             "state_conditions": ("state-cond", conditions)}  # fmt: skip
    # repeats interleaved, so that each set saw the same background load (the embedded broker
    # shares the 2 cores); one set in the full bench, which has its own time budget
    repeats = bench.options.repeats if bench.options.state_only else 1
    results: dict[str, list[dict[str, Any]]] = {key: [] for key in names}
    for repeat in range(repeats):
        for key, (name, segments_path) in names.items():
            config = bench.config(f"{name}-{repeat}", threads=threads,
                                  segments_path=segments_path)  # fmt: skip
            worker = bench.worker(config, command=worker_command(path))
            result = run_state(worker, events, users, timeout_s=timeout_s, echo=bench.echo)
            results[key].append({**result.to_dict(), "worker": config.describe()})
    bench.results.update(_state_runs(results))


def _state_runs(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The state-only results by key: the last repeat's figures, with ``updates_per_s`` the
    median over the repeats (``updates_per_s_spread``: all of them), the highest peak RSS, and
    for the runs with segments ``cost_share`` = 1 - the median of the paired ratios
    (repeat ``i`` with segments over repeat ``i`` without)."""
    runs = {}
    for key, repeats in results.items():
        rates = Spread.of(r["updates_per_s"] for r in repeats)
        peaks = [r["peak_rss_bytes"] for r in repeats if r["peak_rss_bytes"] is not None]
        runs[key] = {**repeats[-1], "updates_per_s": rates.median, "repeats": len(repeats),
                     "updates_per_s_spread": rates.to_dict(),
                     "peak_rss_bytes": max(peaks) if peaks else None,
                     "seconds_per_million_users": 1e6 / rates.median}  # fmt: skip
    base = runs["state"]["updates_per_s_spread"]["values"]
    for key in ("state_segments", "state_conditions"):
        ratio = paired_ratio(runs[key]["updates_per_s_spread"]["values"], base)
        runs[key]["segments"] = STATE_SEGMENTS
        runs[key]["cost_share"] = 1.0 - ratio.median
        runs[key]["cost_share_spread"] = {"min": 1.0 - ratio.max, "max": 1.0 - ratio.min}
    # the conditions alone (no transition to emit) are what the < 25 % target is about
    runs["state_conditions"]["target_cost_share"] = 0.25
    return runs


@contextlib.contextmanager
def _work_dir() -> Iterator[Path]:
    """A temporary directory for worker logs and state; kept (and named) after a failure."""
    path = Path(tempfile.mkdtemp(prefix="portrait-bench-"))
    yield path  # an exception propagates and leaves the logs in place
    shutil.rmtree(path, ignore_errors=True)


def _meta(bench: Bench, started: float) -> dict[str, Any]:
    clf = next((c for (path, _), c in bench._classifiers.items() if path is None), None)
    return {
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
        "wall_s": time.time() - started, "cpu_count": os.cpu_count(),
        "load_average_before": bench.results.get("meta", {}).get("load_average_before"),
        "load_average_after": list(os.getloadavg()),
        "device": bench.options.device, "gpu_extras": bench.options.gpu_extras,
        "model": None if clf is None else {
            "version": clf.model_version, "variant": clf.variant, "provider": clf.provider,
            "max_seq_len": clf.max_seq_len, "path": str(bench.options.model_dir or "artifact"),
        },
        "texts": f"{bench.events_n} REAL comments of the held-out test split (never seen in "
                 f"training); users and times simulated ({bench.workload.users} users, seed "
                 f"{bench.workload.seed}, {bench.options.chinese_share:.0%} writing Chinese)",
        "broker": "your Kafka" if bench.settings.kafka.bootstrap_servers else _TANSU_NOTE,
        "options": {k: str(v) if isinstance(v, Path) else v
                    for k, v in asdict(bench.options).items()},
    }  # fmt: skip


def run_bench(settings: Settings, options: BenchOptions, echo: Echo = print,
              workload: Workload | None = None) -> dict[str, Any]:  # fmt: skip
    """Run every phase and return the results (the JSON document).

    Args:
        settings: Base settings (broker connection, topics layout, model, profile).
        options: The bench options.
        echo: Progress lines.
        workload: The comment events; default :func:`load_workload`.

    Returns:
        The results: ``meta``, ``threads``, ``throughput``, ``ratios``, ``shadow``, ``latency``,
        ``batch_sweep``, ``max_wait``, ``state`` (``state`` only with ``state_only``).

    Raises:
        BenchError: A phase did not finish within ``phase_timeout_s``.
        WorkerProcessError: A worker exited or did not come up.
        BrokerUnavailableError: The broker could not be started or reached.
        ModelLoadError: The model cannot be loaded.
    """
    started = time.time()
    workload = workload or load_workload(chinese_share=options.chinese_share)
    with bench_broker(settings, echo) as bootstrap, _work_dir() as work_dir:
        bench = Bench(settings, options, workload, bootstrap, work_dir, echo)
        bench.results["meta"] = {"load_average_before": list(os.getloadavg())}
        with bench.workers_stopped_at_exit():
            chosen = options.threads[0]
            if options.state_only:
                calibrate(bench, None)
            else:
                chosen, for_a, c_worker = threads_phase(bench)
                repeats_phase(bench, chosen, for_a, c_worker)
                shadow_phase(bench, chosen, c_worker)
                latency_phase(bench, c_worker)
                c_worker.stop()
                sweep_phase(bench, chosen)
            if options.state_users:
                state_phase(bench, chosen)
        bench.results["meta"] = _meta(bench, started)
    return bench.results
