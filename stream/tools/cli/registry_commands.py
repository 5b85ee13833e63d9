"""``portrait model list|stage|promote|rollback``: the model registry (:mod:`stream.model_registry`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from stream.tools.cli.app import app, configure_logging, settings_or_exit

model_app = typer.Typer(
    help="The model registry (PORTRAIT_MODEL__REGISTRY): versioned exported models, one live, "
    "at most one candidate. Workers started with the registry serve the live model and swap to "
    "a new one between two micro-batches, within about a second of a promote or rollback.",
    no_args_is_help=True,
)
app.add_typer(model_app, name="model")

RegistryOption = Annotated[
    Path | None,
    typer.Option(help="Registry directory; default PORTRAIT_MODEL__REGISTRY."),
]


def _registry(path: Path | None) -> Any:
    from stream.model_registry import Registry

    if path is None:
        path = settings_or_exit().model.registry
    if path is None:
        typer.echo("error: no registry: set PORTRAIT_MODEL__REGISTRY or pass --registry", err=True)
        raise typer.Exit(2)
    return Registry(path)


def _run(action: Any) -> Any:
    from stream.model_registry import RegistryError

    try:
        return action()
    except RegistryError as exc:
        typer.echo(f"refused: {exc}", err=True)
        raise typer.Exit(1) from exc


def _macro_f1(model_dir: Path) -> float | None:
    from models.contract.manifest import read_manifest

    try:
        evaluation = read_manifest(model_dir).get("evaluation") or {}
    except (OSError, ValueError):
        return None
    for figures in evaluation.values():
        if isinstance(figures, dict) and isinstance(figures.get("macro_f1"), int | float):
            return float(figures["macro_f1"])
    return None


@model_app.command("list")
def list_models(registry: RegistryOption = None, as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object instead of a table.")] = False) -> None:  # fmt: skip
    """List the registered models: version, role (live, candidate, previous) and the macro-F1
    their manifest records."""
    reg = _registry(registry)
    pointer = reg.pointer()
    rows = []
    for version in reg.versions():
        role = ("live" if version == pointer.live else "candidate" if version == pointer.candidate
                else "previous" if version in pointer.previous else "")  # fmt: skip
        rows.append({"version": version, "role": role,
                     "macro_f1": _macro_f1(reg.model_dir(version))})  # fmt: skip
    if as_json:
        typer.echo(json.dumps({"pointer": pointer.to_dict(), "models": rows}, indent=2))
        return
    if not rows:
        typer.echo(f"registry {reg.root} is empty: `portrait model stage DIR`")
        return
    for row in rows:
        f1 = "-" if row["macro_f1"] is None else f"{row['macro_f1']:.3f}"
        typer.echo(f"{row['role']:<10} {f1:>6}  {row['version']}")


@model_app.command()
def stage(
    model_dir: Annotated[
        Path, typer.Argument(help="An export directory (portrait export or route).")
    ],
    registry: RegistryOption = None,
    verbose: bool = False,
) -> None:
    """Check a model and make it the candidate: it must load with every file matching its
    manifest's sha256, have the labels negative/neutral/positive, carry passed export gates, and
    score the validation texts (English, Chinese, empty, over-long) with finite probabilities.
    Exit code 1, with the reason, when it does not; the live model is untouched either way."""
    configure_logging(verbose)
    reg = _registry(registry)
    version = _run(lambda: reg.stage(model_dir))
    typer.echo(f"staged {version} as the candidate in {reg.root}")


@model_app.command()
def promote(registry: RegistryOption = None) -> None:
    """Make the candidate live (the live model becomes the one `rollback` returns to). Running
    workers swap to it between two micro-batches, within about a second."""
    reg = _registry(registry)
    pointer = _run(reg.promote)
    typer.echo(json.dumps(pointer.to_dict()))


@model_app.command()
def rollback(registry: RegistryOption = None) -> None:
    """Make the previous live model live again. Running workers swap back to it between two
    micro-batches, within about a second."""
    reg = _registry(registry)
    pointer = _run(reg.rollback)
    typer.echo(json.dumps(pointer.to_dict()))


@model_app.command()
def report(
    registry: RegistryOption = None,
    metrics: Annotated[
        list[str] | None,
        typer.Option(
            help="A worker's metrics URL (repeat for each worker); default "
            "http://127.0.0.1:PORTRAIT_METRICS_PORT/metrics."
        ),
    ] = None,
    corrections: Annotated[
        bool,
        typer.Option(
            help="Also score the corrections on PORTRAIT_TOPICS__LABELS with both "
            "models (needs the broker)."
        ),
    ] = True,
    all_corrections: Annotated[
        bool,
        typer.Option(
            help="Score every correction on the topic, not only those made since the candidate "
            "was staged (earlier ones may be rows it was trained on)."
        ),
    ] = False,
    verbose: bool = False,
) -> None:
    """Compare the staged candidate with the live model, as JSON: the workers' shadow metrics
    summed (comments scored, agreement, each model's label shares, seconds per call of each,
    skipped and failed calls) and each model's accuracy on the corrections people made on the
    profile page since the candidate was staged (its shadow period). Exit code 1 without a
    candidate or when an endpoint cannot be read."""
    configure_logging(verbose)
    from models.contract.routing import load_model
    from stream.tools.shadow_report import (
        correction_accuracy,
        made_since,
        shadow_summary,
        sum_metrics,
    )

    settings = settings_or_exit()
    reg = _registry(registry)
    pointer = reg.pointer()
    if pointer.candidate is None:
        typer.echo("refused: no candidate staged: `portrait model stage DIR`", err=True)
        raise typer.Exit(1)
    urls = metrics or [f"http://127.0.0.1:{settings.metrics_port}/metrics"]
    try:
        summary = shadow_summary(sum_metrics(urls), pointer.candidate)
    except OSError as exc:
        typer.echo(f"error: cannot read the workers' metrics ({exc}); pass --metrics URL", err=True)
        raise typer.Exit(1) from exc
    out: dict[str, Any] = {"live": pointer.live, "candidate": pointer.candidate,
                           "workers": len(urls), "shadow": summary}  # fmt: skip
    if corrections:
        rows = _corrections(settings)
        since = None if all_corrections else pointer.staged_at
        kept = made_since(rows, since)
        models = {"candidate": load_model(reg.model_dir(pointer.candidate), "cpu", 1)}
        if pointer.live is not None:
            models["live"] = load_model(reg.model_dir(pointer.live), "cpu", 1)
        out["corrections"] = {"since": since, "before_staging": len(rows) - len(kept),
                              **correction_accuracy(kept, models)}  # fmt: skip
    typer.echo(json.dumps(out, indent=2))


def _corrections(settings: Any) -> list[Any]:
    from models.contract.errors import BrokerUnavailableError
    from stream.kafka_admin import kafka_client_config
    from stream.labels import live_corrections
    from stream.tools.follow import assign_all, group_less_consumer, iter_records

    try:
        consumer = group_less_consumer(kafka_client_config(settings.kafka))
        try:
            assign_all(consumer, [settings.topics.labels])
            return live_corrections((r.key, r.value) for r in iter_records(consumer, follow=False))
        finally:
            consumer.close()
    except BrokerUnavailableError as exc:
        typer.echo(f"error: {exc} (or pass --no-corrections)", err=True)
        raise typer.Exit(1) from exc
