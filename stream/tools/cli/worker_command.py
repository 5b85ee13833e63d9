"""``portrait worker``: the long-running process, with every setting in its --help."""

from __future__ import annotations

import logging
from typing import Any

import typer

from stream.tools.cli.app import app, settings_or_exit


def _settings_lines() -> list[str]:
    """Every setting as ``ENV_NAME (default: ...)``, for ``portrait worker --help``."""
    from pydantic import BaseModel

    from models.contract.manifest import DEFAULT_MODEL_DIR
    from stream.settings import Settings, env_name

    lines: list[str] = []

    def walk(model: type[BaseModel], loc: tuple[str, ...]) -> None:
        for name, field in model.model_fields.items():
            kind = field.annotation
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                walk(kind, (*loc, name))
            else:
                env = env_name((*loc, name))
                default = "none" if field.default in (None, "") else field.default
                if env == "PORTRAIT_MODEL__PATH":  # unset = the committed routed model
                    default = f"the committed model, {DEFAULT_MODEL_DIR}"
                lines.append(f"{env} (default: {default})")

    walk(Settings, ())
    return lines


_TEXT_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"
_JSON_FIELDS = ("asctime", "process", "levelname", "name", "message")


def configure_worker_logging(level: str, log_format: str) -> None:
    """The root logger at ``level``: text lines, or JSON objects with the same fields
    (python-json-logger) for ``PORTRAIT_LOG_FORMAT=json``."""
    handler = logging.StreamHandler()
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(JsonFormatter(list(_JSON_FIELDS)))
    else:
        handler.setFormatter(logging.Formatter(_TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])  # no-op if already configured


class _WorkerHelp(typer.core.TyperCommand):
    """``--help`` of ``portrait worker`` ends with every setting's env name and default."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self.epilog = "Settings (environment variables):\n" + "\n".join(_settings_lines())
        super().format_help(ctx, formatter)


@app.command(cls=_WorkerHelp)
def worker() -> None:
    """Run the stream worker: comments.v1 and behavior.v1 in, profile-updates.v1 out.

    Classifies comments in micro-batches with the ONNX sentiment model.
    Folds comments and behaviour events into per-user profiles (RocksDB + changelog).
    Emits at most one profile update per user per micro-batch.
    Writes undecodable or invalid events to the dead-letter topic.
    Creates missing topics; serves Prometheus metrics; stops cleanly on SIGTERM/SIGINT.

    Exit code 2 when it cannot start: a bad setting, no bootstrap servers, a model
    that does not load, CUDA asked for but unavailable, or wrong partition counts.
    """
    settings = settings_or_exit()
    configure_worker_logging(settings.log_level, settings.log_format)
    if settings.log_level in ("debug", "info"):  # kafka-python logs every connection at info
        logging.getLogger("kafka").setLevel(logging.WARNING)
    # faust.topics and aiokafka (producer, connection) log every sent record's key and value and
    # every request at debug (dead letters carry comment text, keys are user ids): never below
    # info, so no log level prints comment text or user ids.
    for name in ("faust.topics", "aiokafka"):
        logging.getLogger(name).setLevel(logging.INFO)
    from models.contract.errors import ConfigError, DeviceUnavailableError, ModelLoadError
    from stream.worker import run_worker

    try:
        run_worker(settings)
    except (ConfigError, ModelLoadError, DeviceUnavailableError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    except KeyboardInterrupt as e:  # Ctrl-C before the faust worker took over the signals
        raise typer.Exit(130) from e
