"""The bench's outputs: the JSON file, the printed table and the PNG chart.

The targets (issue "portrait bench", 2 CPU cores) are checked and written beside the figures,
never asserted: c/a >= 0.85, c/d >= 1.0 on CPU (>= 10 on GPU), p99 latency at the first load
fraction <= ``max_wait_s`` + 3 x median batch inference time, worker peak RSS in the state-only
mode <= 1 GiB, and, with a baseline model, a/a_baseline >= 0.7 (issue "bilingual model": the
bilingual model's ceiling at least 0.7x the English model's on the same texts).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["format_table", "targets", "write_chart", "write_json"]

_GIB = 1 << 30


def targets(results: dict[str, Any]) -> dict[str, Any]:
    """Each target with the measured figure and whether it was met (None when not measured)."""
    checks: dict[str, Any] = {}
    ratios = results.get("ratios")
    if ratios:
        gpu = results.get("meta", {}).get("device") == "cuda"
        want_cd = 10.0 if gpu else 1.0
        checks["c/a >= 0.85"] = _check(ratios["c/a"]["median"], ratios["c/a"]["median"] >= 0.85)
        checks[f"c/d >= {want_cd:g}"] = _check(ratios["c/d"]["median"],
                                               ratios["c/d"]["median"] >= want_cd)  # fmt: skip
        if "a/a_baseline" in ratios:
            ratio = ratios["a/a_baseline"]["median"]
            checks["a/a_baseline >= 0.7"] = _check(ratio, ratio >= 0.7)
    latency = results.get("latency")
    if latency and latency.get("runs"):
        p99 = latency["runs"][0]["latency_s"]["p99"]
        name = f"p99 at {latency['runs'][0]['load']:.0%} load <= {latency['p99_bound_s']:.3f} s"
        checks[name] = _check(p99, p99 <= latency["p99_bound_s"])
    state = results.get("state")
    if state and state.get("peak_rss_bytes"):
        rss = state["peak_rss_bytes"]
        checks["state worker peak RSS <= 1 GiB"] = _check(rss, rss <= _GIB)
    alone = results.get("state_conditions")
    if alone:
        share, bound = alone["cost_share"], alone["target_cost_share"]
        checks[f"{alone['segments']} segment conditions cost < {bound:.0%}"] = _check(
            share, share < bound
        )
    return checks


def _check(value: float, met: bool) -> dict[str, Any]:
    return {"value": value, "met": bool(met)}


def write_json(results: dict[str, Any], path: Path) -> Path:
    """Write ``results`` (with ``targets`` added) as indented JSON; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {**results, "targets": targets(results)}
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path


def _spread(spread: dict[str, Any], digits: int = 0) -> str:
    return (f"{spread['median']:.{digits}f}  [{spread['min']:.{digits}f} .. "
            f"{spread['max']:.{digits}f}]")  # fmt: skip


def _measure_row(label: str, spread: dict[str, Any], unit: str, detail: str) -> str:
    """One throughput row: ``  (a) model ceiling  <median [min .. max]> <unit>  (<detail>)``."""
    return f"  {label:<19}{_spread(spread)} {unit}  ({detail})"


def _sweep_row(label: str, values: dict[str, float]) -> str:
    """One batch-size sweep row: the label, then each size's figure right-aligned in 6 columns."""
    return f"  {label:<22}" + "  ".join(f"{v:6.0f}" for v in values.values())


def _percentiles(latency_s: dict[str, float], keys: tuple[str, ...], sep: str) -> str:
    """Latency percentiles in seconds, e.g. ``p50 0.050 s  p99 0.090 s`` (``sep`` between them)."""
    return sep.join(f"{key} {latency_s[key]:.3f} s" for key in keys)


def _throughput_lines(results: dict[str, Any]) -> list[str]:
    t = results.get("throughput")
    if not t:
        return []
    worker = t["worker"]
    lines = [f"throughput (median [min .. max] of {len(t['c']['values'])} runs, "
             f"{t['events_per_run']} events per run)",
             _measure_row("(a) model ceiling", t["a"], "comments/s",
                          f"onnxruntime on pre-tokenized batches of {worker['max_batch_size']}, "
                          f"{t['a_threads']} thread(s)"),
             _measure_row("(b) classifier", t["b"], "comments/s", "tokenization + inference"),
             _measure_row("(c) pipeline", t["c"], "events/s",
                          f"real broker + worker, batch {worker['max_batch_size']}, max_wait_s "
                          f"{worker['max_wait_s']}, {worker['intra_op_threads']} thread(s)"),
             _measure_row("(d) baseline", t["d"], "events/s", t["baseline_is"])]  # fmt: skip
    if "a_baseline" in t:
        base = t["a_baseline"]
        lines.append(
            _measure_row(
                "(a) baseline model",
                base,
                "comments/s",
                f"{base['model']} ({base['path']}), same texts and repeats",
            )
        )
    r = results["ratios"]
    lines += [f"  c/a {_spread(r['c/a'], 2)}    c/d {_spread(r['c/d'], 2)}  ({r['pairing']})"]
    if "a/a_baseline" in r:
        lines.append(f"  a/a_baseline {_spread(r['a/a_baseline'], 2)}")
    return lines


def _latency_lines(results: dict[str, Any]) -> list[str]:
    latency = results.get("latency")
    if not latency:
        return []
    lines = [
        f"latency, open loop ({latency['definition']}); capacity {latency['capacity_per_s']:.0f}"
        f" events/s; p99 bound {latency['p99_bound_s']:.3f} s ({latency['p99_bound_is']})"
    ]
    for run in latency["runs"]:
        s = run["latency_s"]
        lines.append(f"  load {run['load']:.0%}: {run['sent_rate_per_s']:.0f} events/s sent, "
                     + _percentiles(s, ("p50", "p95", "p99", "max"), "  "))  # fmt: skip
    return lines


def _sweep_lines(results: dict[str, Any]) -> list[str]:
    sweep = results.get("batch_sweep")
    if not sweep:
        return []
    lines = ["batch-size sweep   size:  " + "  ".join(f"{s:>6}" for s in sweep["b"])]
    lines.append(_sweep_row("(b) comments/s", sweep["b"]))
    lines.append(_sweep_row("(c) events/s", sweep["c"]))
    for run in results.get("max_wait", []):
        lat = run["latency"]["latency_s"]
        lines.append(f"  max_wait_s {run['max_wait_s']:<6g} c {run['c_events_per_s']:6.0f} events/s"
                     f"  latency at {run['latency']['load']:.0%} load "
                     + _percentiles(lat, ("p50", "p99"), " "))  # fmt: skip
    return lines


def _state_lines(results: dict[str, Any]) -> list[str]:
    state = results.get("state")
    if not state:
        return []
    rss = state["peak_rss_bytes"]
    return [f"state-only mode ({state['classifier']})",
            f"  {state['users']} distinct users: {state['updates_per_s']:.0f} profile updates/s, "
            f"worker peak RSS {'n/a' if rss is None else f'{rss / 2**20:.0f} MiB'}, RocksDB "
            f"state {state['state_dir_bytes'] / 2**20:.1f} MiB on disk; 1,000,000 users would take "
            f"{state['seconds_per_million_users'] / 60:.1f} min at this rate"] + _segment_lines(
        results
    )  # fmt: skip


def _segment_lines(results: dict[str, Any]) -> list[str]:
    run, alone = results.get("state_segments"), results.get("state_conditions")
    if not run or not alone:
        return []
    per_update = run.get("segment_transitions", 0) / max(run["users"], 1)
    return [f"  with {run['segments']} segments: {run['updates_per_s']:.0f} profile updates/s, "
            f"cost {_cost(run)} of the rate without, {per_update:.2f} transitions "
            f"(segment events) per update (every update is a user's first event: the most "
            f"transitions a workload can have)",
            f"  the same {alone['segments']} conditions, no profile entering: "
            f"{alone['updates_per_s']:.0f} profile updates/s, cost {_cost(alone)} "
            f"(target < {alone['target_cost_share']:.0%})"]  # fmt: skip


def _cost(run: dict[str, Any]) -> str:
    spread = run.get("cost_share_spread")
    if not spread or run.get("repeats", 1) < 2:
        return f"{run['cost_share']:.0%}"
    return (f"{run['cost_share']:.0%} (median of {run['repeats']} paired repeats, "
            f"{spread['min']:.0%} to {spread['max']:.0%})")  # fmt: skip


def format_table(results: dict[str, Any]) -> str:
    """The results as text: throughput, ratios, latency, sweep, threads, state, targets."""
    meta = results.get("meta", {})
    lines = ["", "== portrait bench ==", f"model {meta.get('model')}; device {meta.get('device')}; "
             f"{meta.get('cpu_count')} CPUs; load average before {meta.get('load_average_before')} "
             f"after {meta.get('load_average_after')}", f"texts: {meta.get('texts')}",
             f"broker: {meta.get('broker')}"]  # fmt: skip
    lines += _throughput_lines(results) + _latency_lines(results) + _sweep_lines(results)
    threads = results.get("threads")
    if threads:
        lines.append(f"threads: {threads['why']}")
    lines += _state_lines(results) + _shadow_lines(results)
    for name, check in targets(results).items():
        lines.append(
            f"target {name}: {'met' if check['met'] else 'NOT met'} ({check['value']:.3g})"
        )
    return "\n".join(lines)


def _shadow_lines(results: dict[str, Any]) -> list[str]:
    """Table lines of ``results["shadow"]`` (empty when the phase did not run)."""
    shadow = results.get("shadow")
    if not shadow:
        return []
    share = shadow["scored_share"]
    return [
        f"shadow scoring ({shadow['candidate']}): c {shadow['c']['median']:.0f} -> "
        f"{shadow['c_shadow']['median']:.0f} events/s, cost {shadow['cost_share']:.0%} "
        f"[{shadow['cost_share_spread']['min']:.0%} .. {shadow['cost_share_spread']['max']:.0%}]"
        f"; candidate scored {shadow['comments_scored_in_shadow']:.0f} comments, skipped "
        f"{shadow['comments_skipped']:.0f}"
        + (f" ({share:.0%} scored)" if share is not None else "")
    ]


def write_chart(results: dict[str, Any], path: Path) -> Path | None:
    """A PNG of throughput (a)-(d), the batch-size sweep and latency percentiles.

    Returns:
        ``path``, or None when matplotlib is not installed (the ``train`` extra has it).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    _bars(axes[0], results)
    _sweep(axes[1], results)
    _latency(axes[2], results)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _bars(ax: Any, results: dict[str, Any]) -> None:
    t = results.get("throughput")
    ax.set_title("throughput: median, bars = min..max")
    if not t:
        return
    names = ["a", "b", "c", "d"]
    medians = [t[n]["median"] for n in names]
    errors = [[m - t[n]["min"] for n, m in zip(names, medians, strict=True)],
              [t[n]["max"] - m for n, m in zip(names, medians, strict=True)]]  # fmt: skip
    ax.bar(["(a) model", "(b) classifier", "(c) pipeline", "(d) per-event"], medians, yerr=errors,
           color=["#888888", "#5b8def", "#2ca02c", "#d62728"], capsize=4)  # fmt: skip
    ax.set_ylabel("per second")


def _sweep(ax: Any, results: dict[str, Any]) -> None:
    sweep = results.get("batch_sweep")
    ax.set_title("batch-size sweep")
    if not sweep:
        return
    sizes = [int(s) for s in sweep["b"]]
    ax.plot(sizes, list(sweep["b"].values()), "o-", label="(b) classifier, comments/s")
    ax.plot([int(s) for s in sweep["c"]], list(sweep["c"].values()), "s-",
            label="(c) pipeline, events/s")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xlabel("max_batch_size")
    ax.legend()


def _latency(ax: Any, results: dict[str, Any]) -> None:
    ax.set_title("end-to-end latency, open loop")
    runs = [
        (f"{r['load']:.0%} load", r["latency_s"])
        for r in results.get("latency", {}).get("runs", [])
    ]
    runs += [(f"wait {r['max_wait_s']:g}s", r["latency"]["latency_s"])
             for r in results.get("max_wait", [])]  # fmt: skip
    for offset, key in enumerate(("p50", "p95", "p99")):
        xs = [i + (offset - 1) * 0.25 for i in range(len(runs))]
        ax.bar(xs, [s[key] for _, s in runs], width=0.25, label=key)
    ax.set_xticks(range(len(runs)), [name for name, _ in runs])
    ax.set_ylabel("seconds")
    ax.legend()
