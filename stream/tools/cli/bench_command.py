"""``portrait bench``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from stream.tools.cli.app import app, configure_logging, quiet_kafka_clients, settings_or_exit


@app.command()
def bench(
    out: Annotated[Path, typer.Option(help="JSON results file.")] = Path("bench-results.json"),
    chart: Annotated[
        Path | None,
        typer.Option(
            help="PNG chart; default: OUT with .png (skipped, with a message, without matplotlib)."
        ),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            help="Model directory; default PORTRAIT_MODEL__PATH, else the committed artifact."
        ),
    ] = None,
    device: Annotated[
        str,
        typer.Option(
            help="cpu | cuda (cuda: fp16 graph, length-sorted batches, I/O binding in (a))."
        ),
    ] = "cpu",
    quick: Annotated[
        bool,
        typer.Option(
            help="Smoke run: short bursts, batch sizes 1/8/64, 2 s latency runs, 500 state users."
        ),
    ] = False,
    state_only: Annotated[
        bool,
        typer.Option(
            help="Run only the state-only mode (stored predictions; many users through RocksDB): "
            "without segments, with 20 and with their conditions alone, --repeats times each, "
            "interleaved."
        ),
    ] = False,
    state_users: Annotated[
        int | None,
        typer.Option(
            min=0,
            help=(
                "Distinct users of the state-only mode; default 1,000,000 with --state-only, 50,000 in "
                "the full bench (sized to fit ~10 min on 2 cores), 500 with --quick; 0 skips it."
            ),
        ),
    ] = None,
    baseline_model: Annotated[
        Path | None,
        typer.Option(
            help="A second model directory (e.g. a copy of the previous artifact): its (a) is measured in the same repeats on the same texts, and a/a_baseline reported."
        ),
    ] = None,
    shadow_model: Annotated[
        Path | None,
        typer.Option(
            help="Candidate model scored in shadow when measuring the cost of shadow scoring (c with and without a candidate); default: a copy of the model under another version."
        ),
    ] = None,
    chinese_share: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Share of the simulated users writing Chinese test reviews (the routed model's other graph); 0 = English only.",
        ),
    ] = 0.0,
    repeats: Annotated[
        int,
        typer.Option(
            min=1,
            help="Repeats of (a)-(d), and of the state-only runs with --state-only; "
            "medians need >= 3.",
        ),
    ] = 3,
    events: Annotated[
        int,
        typer.Option(
            min=0, help="Events per (c)/(d) run; 0 = (c)'s rate on a short run x --burst-s."
        ),
    ] = 0,
    burst_s: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="Target seconds of one (c) run (long enough that the wait for the first fetch of a run does not count as lost throughput).",
        ),
    ] = 20.0,
    batch_size: Annotated[
        int, typer.Option(min=1, help="The worker's max_batch_size for (a) and (c).")
    ] = 64,
    max_wait_s: Annotated[
        float, typer.Option(min=0.001, help="The worker's max_wait_s for (c).")
    ] = 0.02,
    latency_s: Annotated[
        float, typer.Option(min=0.5, help="Seconds of sending per open-loop run.")
    ] = 12.0,
    sweep_sizes: Annotated[
        str, typer.Option(help="Batch sizes of the (b)/(c) sweep, comma-separated.")
    ] = "1,8,16,32,64,128",
    verbose: bool = False,
) -> None:
    """Measure (a) model ceiling, (b) classifier, (c) pipeline, (d) per-event baseline, latency.

    One run on the same real comment texts and model: ratios c/a and c/d over paired repeats,
    (c) with and without a candidate model scored in shadow,
    open-loop latency at 50% and 80% of (c)'s capacity, batch-size and max_wait_s sweeps, the
    onnxruntime thread count, and the state-only mode (worker peak RSS). Starts a local broker
    unless PORTRAIT_KAFKA__BOOTSTRAP_SERVERS is set (then run-scoped topics). Writes JSON and a
    PNG, prints a table. Exit code 1 when a phase fails.
    """
    configure_logging(verbose)
    quiet_kafka_clients(verbose)
    if not verbose:
        for name in ("stream", "models"):
            logging.getLogger(name).setLevel(logging.WARNING)
    from models.contract.errors import PortraitError
    from stream.tools.bench import BenchOptions, format_table, run_bench, write_chart, write_json

    if device not in ("cpu", "cuda"):
        raise typer.BadParameter("must be cpu or cuda", param_hint="--device")
    try:
        sizes = tuple(int(size) for size in sweep_sizes.split(","))
    except ValueError as e:
        raise typer.BadParameter("comma-separated integers", param_hint="--sweep-sizes") from e
    default_users = 1_000_000 if state_only else 50_000
    options = BenchOptions(
        model_dir=model, device=device, repeats=repeats, burst_s=burst_s, events=events,  # type: ignore[arg-type]  # checked above
        baseline_model_dir=baseline_model, chinese_share=chinese_share,
        shadow_model_dir=shadow_model,
        batch_size=batch_size, max_wait_s=max_wait_s, latency_s=latency_s, state_only=state_only,
        state_users=default_users if state_users is None else state_users, sweep_sizes=sizes,
    )  # fmt: skip
    if quick:
        options = options.quick()
    try:
        results = run_bench(settings_or_exit(), options, echo=lambda s: typer.echo(s, err=True))
    except PortraitError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    typer.echo(format_table(results))
    typer.echo(f"written: {write_json(results, out)}")
    png = write_chart(results, chart or out.with_suffix(".png"))
    typer.echo(f"written: {png}" if png else "chart skipped: matplotlib is not installed "
               "(pip install matplotlib, or the 'train' extra)")  # fmt: skip
