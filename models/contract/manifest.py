"""``manifest.json``: what an exported model directory holds, and the hashes to check it by.

The manifest is what the worker reads to load a model (labels, max_seq_len, which graph file for
which device) and what a test checks the committed artifact against (sha256 of every file).
It depends on nothing but the standard library, so the worker can read and verify it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.contract.errors import ModelLoadError

__all__ = [
    "DEFAULT_MODEL_DIR",
    "FIX_HINT",
    "RuntimeManifest",
    "check_model_file",
    "read_runtime_manifest",
    "MANIFEST",
    "VARIANT_FILES",
    "file_sha256",
    "read_manifest",
    "verify_files",
    "write_manifest",
]

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "artifact"
"""The committed model artifact (``models/artifact``), used when no model path is set."""

MANIFEST = "manifest.json"
FIX_HINT = "run `portrait export`, or set PORTRAIT_MODEL__PATH to a directory it wrote"
"""What a model-loading error tells the user to do."""
VARIANT_FILES = {"fp32": "model.fp32.onnx", "int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}
_PRECISION = {
    "fp32": "float32",
    "int8": "int8 dynamic (weights int8 per output channel, activations quantised per run)",
    "fp16": "float16",
}
_ROWS_PER_RUN = {"int8": 1}
"""Variants whose verdicts would depend on the other rows of a run: dynamic quantisation scales
activations per tensor, i.e. over every row of a batch (microsoft/onnxruntime#10111), so the
runtime feeds them one row per run (on 2 cores no slower than padded batches: the README's
"Verdicts independent of the micro-batch" gives the figures)."""

_PROVIDERS = {
    "fp32": ["CPUExecutionProvider", "CUDAExecutionProvider"],
    "int8": ["CPUExecutionProvider"],
    "fp16": ["CUDAExecutionProvider"],
}


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(
    model_dir: Path, meta: dict[str, Any], *, precision: dict[str, str] | None = None
) -> dict[str, Any]:
    """Write ``model_dir/manifest.json`` for the graphs and tokenizer present in ``model_dir``.

    Args:
        model_dir: holds some of :data:`VARIANT_FILES` and ``tokenizer.json``.
        meta: extra fields (model_version, labels, max_seq_len, opset, training, evaluation, ...).
        precision: variant -> how its graph was quantised, where it differs from what
            ``portrait export`` writes today (a graph shipped by an earlier export).

    Returns:
        The manifest written.

    Raises:
        FileNotFoundError: no graph or no ``tokenizer.json`` in ``model_dir``.
    """
    variants = {
        name: {
            "file": file,
            "precision": (precision or {}).get(name, _PRECISION[name]),
            "providers": _PROVIDERS[name],
            **({"rows_per_run": _ROWS_PER_RUN[name]} if name in _ROWS_PER_RUN else {}),
        }
        for name, file in VARIANT_FILES.items()
        if (model_dir / file).is_file()
    }
    if not variants or not (model_dir / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"{model_dir} needs at least one of {sorted(VARIANT_FILES.values())} and tokenizer.json"
        )
    files = sorted(
        p.name
        for p in model_dir.iterdir()
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
    )
    manifest = {
        **meta,
        "default_variant": {
            "cpu": "int8" if "int8" in variants else "fp32",
            "cuda": "fp16" if "fp16" in variants else "fp32",
        },
        "variants": variants,
        "files": {name: file_sha256(model_dir / name) for name in files},
        "sizes_bytes": {name: (model_dir / name).stat().st_size for name in files},
    }
    (model_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return manifest


def read_manifest(model_dir: Path) -> dict[str, Any]:
    """Read ``model_dir/manifest.json``.

    Raises:
        FileNotFoundError: there is no manifest.
        ValueError: it is not valid JSON.
    """
    path = model_dir / MANIFEST
    try:
        return dict(json.loads(path.read_text()))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e


def verify_files(model_dir: Path) -> list[str]:
    """Compare every file listed in the manifest with its recorded SHA-256.

    Returns:
        One message per missing or changed file; empty when all match.
    """
    problems = []
    for name, expected in read_manifest(model_dir)["files"].items():
        path = model_dir / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif (got := file_sha256(path)) != expected:
            problems.append(f"{name}: sha256 {got} != manifest {expected}")
    return problems


@dataclass(frozen=True)
class RuntimeManifest:
    """What the runtime needs of ``manifest.json`` (see :func:`read_runtime_manifest`)."""

    model_version: str
    labels: tuple[str, ...]
    max_seq_len: int
    default_variant: dict[str, str]
    variants: dict[str, str]
    files: dict[str, str]
    rows_per_run: dict[str, int]


def check_model_file(model_dir: Path, name: str, manifest: RuntimeManifest) -> Path:
    """The path of a model file, checked to exist and to match the manifest's sha256.

    Raises:
        ModelLoadError: the file is missing or its sha256 differs.
    """
    path = model_dir / name
    if not path.is_file():
        raise ModelLoadError(f"model file {path} is missing; {FIX_HINT}", path=path)
    expected = manifest.files.get(name)
    if expected is not None and file_sha256(path) != expected:
        raise ModelLoadError(
            f"model file {path} does not match the sha256 in manifest.json (corrupt or replaced); "
            f"{FIX_HINT}",
            path=path,
        )
    return path


def read_runtime_manifest(model_dir: Path) -> RuntimeManifest:
    """Read and check ``model_dir/manifest.json`` for loading a graph.

    Raises:
        ModelLoadError: the directory or manifest is missing, not JSON, or lacks labels,
            max_seq_len or a variant.
    """
    if not model_dir.is_dir():
        raise ModelLoadError(
            f"model directory {model_dir} does not exist; {FIX_HINT}", path=model_dir
        )
    path = model_dir / "manifest.json"
    try:
        raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        variants = {str(k): str(v["file"]) for k, v in raw["variants"].items()}
        rows_per_run = {
            str(k): int(v["rows_per_run"])
            for k, v in raw["variants"].items()
            if "rows_per_run" in v
        }
        manifest = RuntimeManifest(
            model_version=str(raw["model_version"]),
            labels=tuple(str(label) for label in raw["labels"]),
            max_seq_len=int(raw["max_seq_len"]),
            default_variant={str(k): str(v) for k, v in raw.get("default_variant", {}).items()},
            variants=variants,
            files={str(k): str(v) for k, v in raw.get("files", {}).items()},
            rows_per_run=rows_per_run,
        )
    except FileNotFoundError as exc:
        raise ModelLoadError(f"{path} is missing; {FIX_HINT}", path=path) from exc
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelLoadError(
            f"{path} is not a valid manifest ({type(exc).__name__}: {exc}); {FIX_HINT}", path=path
        ) from exc
    if len(manifest.labels) < 2 or manifest.max_seq_len < 2 or not manifest.variants:
        raise ModelLoadError(
            f"{path} needs >= 2 labels, max_seq_len >= 2 and one variant; {FIX_HINT}", path=path
        )
    return manifest
