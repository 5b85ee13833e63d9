"""The model registry: versioned exported models in one directory, and a pointer to the live one.

Layout of ``PORTRAIT_MODEL__REGISTRY``::

    models/<model_version>/     a copy of an export directory (``portrait export`` or ``route``)
    pointer.json                {"live": version | null, "candidate": version | null,
                                 "previous": [versions that were live, newest last]}

``portrait model stage DIR`` copies a model in as the candidate after checking it
(:func:`check_model`); ``promote`` makes the candidate live (the live one goes to ``previous``);
``rollback`` makes the newest previous model live again. The pointer is replaced atomically
(``os.replace``) under a file lock, so a reader sees the old pointer or the new one, never half of
one. A worker started with a registry loads the live model.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from models.contract.errors import ModelLoadError, PortraitError
from models.contract.labels import LABELS
from models.contract.manifest import read_manifest
from models.contract.routing import LoadedModel, load_model
from stream.settings import ModelSettings

__all__ = [
    "VALIDATION_TEXTS",
    "Pointer",
    "Registry",
    "RegistryError",
    "check_model",
    "load_configured_model",
]

VALIDATION_TEXTS = (
    "Great to use, but the price is a bit high",
    "Terrible, it broke on day one and support never answered.",
    "It arrived on Tuesday.",
    "Love it, works great",
    "这个产品很好用，但是价格有点贵",
    "质量太差了，用了一天就坏了",
    "",
    "ok " * 400,
)
"""Texts every candidate must score with finite probabilities (English, Chinese, mixed, empty,
longer than any model's max_seq_len)."""

_POINTER = "pointer.json"


class RegistryError(PortraitError):
    """A registry operation was refused; the message says why and what to do."""


@dataclass(frozen=True)
class Pointer:
    """Which registered model is live, which is the candidate, which were live before.

    Attributes:
        live: The live model's version, ``None`` before the first promotion.
        candidate: The staged candidate's version, or ``None``.
        previous: Versions that were live before, oldest first (``rollback`` takes the last).
        staged_at: When the candidate was staged (UTC, RFC 3339): its shadow period starts
            there, and ``portrait model report`` scores only corrections made since (earlier
            ones may be the candidate's training rows).
    """

    live: str | None = None
    candidate: str | None = None
    previous: tuple[str, ...] = field(default_factory=tuple)
    staged_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"live": self.live, "candidate": self.candidate, "previous": list(self.previous),
                "staged_at": self.staged_at}  # fmt: skip


def _manifests(model_dir: Path) -> list[dict[str, Any]]:
    """The model's manifest and, for a routed model, each route's."""
    top = read_manifest(model_dir)
    routes = (top.get("routing") or {}).get("routes") or {}
    return [top, *(read_manifest(model_dir / sub) for sub in sorted(set(routes.values())))]


def check_model(model_dir: Path) -> str:
    """Check that a model may be staged; return its version.

    Checks, in order: it loads (every file present and matching the sha256 its manifest
    records), its labels are :data:`~models.contract.labels.LABELS` in that order, its export
    gates passed (a ``validation`` section in its manifest or its routes' with no ``failures``),
    and it scores :data:`VALIDATION_TEXTS` with finite probabilities that sum to 1 per row.

    Raises:
        RegistryError: The first check that failed, with what to do.
    """
    try:
        model = load_model(model_dir, "cpu", 1)
    except (ModelLoadError, FileNotFoundError, ValueError) as exc:
        raise RegistryError(f"{model_dir} does not load: {exc}") from exc
    if tuple(model.labels) != LABELS:
        raise RegistryError(f"{model_dir}: labels {list(model.labels)}, not {list(LABELS)}: "
                            f"Portrait's profiles need those three in that order")  # fmt: skip
    manifests = _manifests(model_dir)
    if not any("validation" in m for m in manifests):
        raise RegistryError(
            f"{model_dir}: its manifest has no validation section: export "
            f"it with `portrait export` or `portrait route`"
        )
    failures = [f for m in manifests for f in (m.get("validation") or {}).get("failures") or []]
    if failures:
        raise RegistryError(f"{model_dir}: export gates failed: {'; '.join(map(str, failures))}")
    rows = np.asarray(model.predict_proba(list(VALIDATION_TEXTS)), dtype=np.float64)
    ok = rows.shape == (len(VALIDATION_TEXTS), len(LABELS)) and bool(np.isfinite(rows).all())
    if not ok or not all(math.isclose(float(s), 1.0, abs_tol=1e-3) for s in rows.sum(axis=1)):
        raise RegistryError(f"{model_dir}: scoring the validation texts gave shape {rows.shape} "
                            f"with non-finite or unnormalised probabilities")  # fmt: skip
    return str(model.model_version)


class Registry:
    """A registry directory (created on first use).

    Args:
        root: ``PORTRAIT_MODEL__REGISTRY``.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = FileLock(str(root / ".pointer.lock"))

    def pointer(self) -> Pointer:
        """The current pointer (an empty one before anything was staged)."""
        path = self.root / _POINTER
        if not path.is_file():
            return Pointer()
        raw = json.loads(path.read_text(encoding="utf-8"))
        return Pointer(raw.get("live"), raw.get("candidate"), tuple(raw.get("previous") or ()),
                       raw.get("staged_at"))  # fmt: skip

    def model_dir(self, version: str) -> Path:
        """The directory of a registered model."""
        return self.root / "models" / version

    def live_dir(self) -> Path:
        """The live model's directory.

        Raises:
            RegistryError: No model was promoted yet.
        """
        live = self.pointer().live
        if live is None:
            raise RegistryError(
                f"registry {self.root} has no live model yet: run "
                f"`portrait model stage DIR`, then `portrait model promote`"
            )
        return self.model_dir(live)

    def versions(self) -> list[str]:
        """Every registered version, sorted."""
        models = self.root / "models"
        return sorted(p.name for p in models.iterdir() if p.is_dir()) if models.is_dir() else []

    def stage(self, model_dir: Path) -> str:
        """Check a model (:func:`check_model`), copy it in, and make it the candidate.

        Returns:
            Its version.

        Raises:
            RegistryError: It failed a check, or it is already the live model.
        """
        version = check_model(model_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock:
            pointer = self.pointer()
            if version == pointer.live:
                raise RegistryError(f"{version} is already the live model")
            target = self.model_dir(version)
            if not target.is_dir():
                tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=".staging-"))
                shutil.copytree(model_dir, tmp, dirs_exist_ok=True)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, target)
            staged_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
            self._write(Pointer(pointer.live, version, pointer.previous, staged_at))
        return version

    def promote(self) -> Pointer:
        """Make the candidate live; the live model becomes the newest previous one.

        Raises:
            RegistryError: There is no candidate.
        """
        with self._lock:
            pointer = self.pointer()
            if pointer.candidate is None:
                raise RegistryError("no candidate to promote: `portrait model stage DIR` first")
            previous = pointer.previous + ((pointer.live,) if pointer.live else ())
            new = Pointer(pointer.candidate, None, previous)
            self._write(new)
        return new

    def rollback(self) -> Pointer:
        """Make the newest previous model live again (the candidate, if any, stays).

        Raises:
            RegistryError: No model was live before the current one.
        """
        with self._lock:
            pointer = self.pointer()
            if not pointer.previous:
                raise RegistryError("nothing to roll back to: no model was live before this one")
            new = Pointer(pointer.previous[-1], pointer.candidate, pointer.previous[:-1],
                          pointer.staged_at)  # fmt: skip
            self._write(new)
        return new

    def _write(self, pointer: Pointer) -> None:
        tmp = self.root / f".{_POINTER}.tmp"
        tmp.write_text(json.dumps(pointer.to_dict(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.root / _POINTER)


def load_configured_model(model: ModelSettings) -> LoadedModel:
    """The model the settings name: the registry's live model (``PORTRAIT_MODEL__REGISTRY``),
    else ``PORTRAIT_MODEL__PATH``, else the committed artifact.

    Raises:
        ModelLoadError: The model cannot be loaded, or the registry has no live model.
        DeviceUnavailableError: CUDA is asked for but unavailable.
    """
    path = model.path
    if model.registry is not None:
        try:
            path = Registry(model.registry).live_dir()
        except RegistryError as exc:
            raise ModelLoadError(str(exc), path=model.registry) from exc
    return load_model(path, model.device, model.intra_op_threads)
