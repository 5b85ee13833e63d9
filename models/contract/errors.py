"""The Portrait error hierarchy and the policy for each error class.

Every error Portrait raises on purpose derives from :class:`PortraitError` and carries its context
as attributes, so callers decide on the class, never on message text. The policy per class:

- :class:`EventError`: the event cannot be decoded or validated. The worker writes the original key
  and value bytes to the dead-letter topic with the ``reason`` in a header, increments
  ``portrait_events_dead_lettered_total{reason}`` and goes on with the next event.
- :class:`ConfigError`: a setting is invalid. The command stops at start with the message, which
  names the environment variable and what to change.
- :class:`ModelLoadError`: the model directory is missing or corrupt. The worker stops at start.
- :class:`DeviceUnavailableError`: the requested device (CUDA) cannot be used. The worker stops at
  start; Portrait never falls back to the CPU silently.
- :class:`InferenceError`: a micro-batch failed in onnxruntime. The worker retries the batch a
  bounded number of times, then dead-letters its events.
- :class:`BrokerUnavailableError`: the Kafka-protocol broker cannot be reached. Callers retry with
  backoff or stop with the message.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "BrokerUnavailableError",
    "ConfigError",
    "DeviceUnavailableError",
    "EventError",
    "InferenceError",
    "ModelLoadError",
    "PortraitError",
]


class PortraitError(Exception):
    """Root of every error Portrait raises on purpose."""


class ConfigError(PortraitError):
    """A setting is invalid or missing.

    The message names the environment variable (``PORTRAIT_...``) and what to change, e.g.
    ``"PORTRAIT_BATCH__MAX_WAIT_S: must be > 0 (got -1)"``. Fix the setting and start again.

    Attributes:
        env_vars: The environment variable names of the offending settings, in message order.
    """

    def __init__(self, message: str, *, env_vars: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.env_vars: tuple[str, ...] = tuple(env_vars)


class ModelLoadError(PortraitError):
    """The model directory, its manifest, tokenizer or ONNX graph cannot be loaded.

    The message says which file is wrong and how to fix it (run ``portrait export``, or point
    ``PORTRAIT_MODEL__PATH`` at a directory that ``portrait export`` wrote).

    Attributes:
        path: The file or directory that could not be loaded.
    """

    def __init__(self, message: str, *, path: Path) -> None:
        super().__init__(message)
        self.path = path


class DeviceUnavailableError(PortraitError):
    """The requested inference device cannot be used (no silent CPU fallback).

    Raised when ``device="cuda"`` is requested but onnxruntime has no ``CUDAExecutionProvider``
    (install the ``gpu`` extra, ``onnxruntime-gpu``, instead of ``onnxruntime``) or the provider
    failed to initialise. Set ``PORTRAIT_MODEL__DEVICE=cpu`` or ``auto`` to run on the CPU.

    Attributes:
        requested: The device asked for, e.g. ``"cuda"``.
        available_providers: onnxruntime's available execution providers on this machine.
    """

    def __init__(
        self, requested: str, available_providers: Sequence[str], *, detail: str = ""
    ) -> None:
        self.requested = requested
        self.available_providers: tuple[str, ...] = tuple(available_providers)
        message = (
            f"device {requested!r} is not available: onnxruntime providers here are "
            f"{list(self.available_providers)}"
        )
        if detail:
            message += f" ({detail})"
        message += (
            ". Install onnxruntime-gpu (the 'gpu' extra) on a machine with CUDA, or set "
            "PORTRAIT_MODEL__DEVICE=cpu (or auto)."
        )
        super().__init__(message)


class EventError(PortraitError):
    """An event value cannot be decoded or validated; it belongs on the dead-letter topic.

    Attributes:
        reason: Short machine code, used as the dead-letter ``portrait.error.reason`` header and as
            the metric label: one of ``"empty_value"``, ``"tombstone"``, ``"not_utf8"``,
            ``"not_json"``, ``"not_an_object"``, ``"invalid_field"``, ``"key_mismatch"``,
            ``"wrong_partition"``, ``"event_time_out_of_range"``.
        detail: Human-readable explanation; it names fields, never their text content.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class InferenceError(PortraitError):
    """onnxruntime failed on a micro-batch.

    The worker retries the batch a bounded number of times, then dead-letters its events with
    reason ``"inference_failed"``.
    """


class BrokerUnavailableError(PortraitError):
    """The Kafka-protocol broker cannot be reached at the configured bootstrap servers.

    Check ``PORTRAIT_KAFKA__BOOTSTRAP_SERVERS`` and that the broker is running.
    """
