"""The hot swap's watcher: follows the registry's pointer, keeps serving on a bad model."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stream.model_registry import Registry
from stream.model_swap import ModelWatcher


def _stage(registry: Registry, make: Callable[..., Path], version: str) -> None:
    registry.stage(make(version))


def test_the_watcher_swaps_on_a_pointer_change_and_skips_a_model_that_fails(
    tmp_path: Path, named_tiny_model: Callable[..., Path]
) -> None:
    registry = Registry(tmp_path / "registry")
    for version in ("m1", "m2", "m3"):
        _stage(registry, named_tiny_model, version)
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
    _stage(registry, named_tiny_model, "m2")
    registry.promote()  # live: m2
    asyncio.run(watcher.check())
    assert applied == ["model m2"] and watcher.current == "m2" and counted == ["swapped"]
    _stage(registry, named_tiny_model, "m3")
    registry.promote()  # live: m3, which fails to load
    asyncio.run(watcher.check())
    asyncio.run(watcher.check())  # not tried again until the pointer changes
    assert watcher.current == "m2" and counted == ["swapped", "failed"]
    assert loads == ["m2", "m3"]
    registry.rollback()  # live: m2 again: already served
    asyncio.run(watcher.check())
    assert loads == ["m2", "m3"] and applied == ["model m2"]
