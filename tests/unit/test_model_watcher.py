"""The hot swap's watcher: follows the registry's pointer, keeps serving on a bad model."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

from stream.model_registry import Registry
from stream.model_swap import ModelWatcher


def _stage(registry: Registry, tiny_model_dir: Path, tmp_path: Path, version: str) -> None:
    target = tmp_path / version
    if not target.is_dir():
        shutil.copytree(tiny_model_dir, target)
        manifest = json.loads((target / "manifest.json").read_text())
        manifest.update(model_version=version, validation={"failures": []})
        (target / "manifest.json").write_text(json.dumps(manifest))
    registry.stage(target)


def test_the_watcher_swaps_on_a_pointer_change_and_skips_a_model_that_fails(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    registry = Registry(tmp_path / "registry")
    for version in ("m1", "m2", "m3"):
        _stage(registry, tiny_model_dir, tmp_path, version)
        registry.promote()
    registry.rollback()
    registry.rollback()  # live: m1
    applied: list[Any] = []
    counted: list[str] = []
    loads: list[str] = []

    def load(path: Path) -> str:
        loads.append(path.name)
        if path.name == "m3":
            raise RuntimeError("NaN logits")
        return f"model {path.name}"

    watcher = ModelWatcher(registry, "m1", load, applied.append, counted.append)
    asyncio.run(watcher.check())
    assert applied == [] and loads == []  # nothing changed
    _stage(registry, tiny_model_dir, tmp_path, "m2")
    registry.promote()  # live: m2
    asyncio.run(watcher.check())
    assert applied == ["model m2"] and watcher.current == "m2" and counted == ["swapped"]
    _stage(registry, tiny_model_dir, tmp_path, "m3")
    registry.promote()  # live: m3, which fails to load
    asyncio.run(watcher.check())
    asyncio.run(watcher.check())  # not tried again until the pointer changes
    assert watcher.current == "m2" and counted == ["swapped", "failed"]
    assert loads == ["m2", "m3"]
    registry.rollback()  # live: m2 again: already served
    asyncio.run(watcher.check())
    assert loads == ["m2", "m3"] and applied == ["model m2"]
