"""The layers of the tree hold: every module is in one import-linter list; lint-imports passes.

The contracts live in ``pyproject.toml`` (``[tool.importlinter]``); this test keeps their module
lists complete as modules are added, and fails with lint-imports' own report when a forbidden
import appears.
"""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = {
    c["name"]: c
    for c in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"
    ]
}


def _modules(package: str) -> set[str]:
    return {f"{package}.{p.stem}" for p in (ROOT / package).glob("*.py") if p.stem != "__init__"}


def _sources(prefix: str) -> set[str]:
    name = next(n for n in CONTRACTS if n.startswith(prefix))
    return set(CONTRACTS[name]["source_modules"])


def test_every_worker_module_is_checked_as_worker() -> None:
    assert _modules("stream") == _sources("The worker")


def test_every_training_module_is_checked_as_training_and_forbidden_to_the_contract() -> None:
    training = _modules("models")
    assert training == _sources("Training")
    contract = next(c for n, c in CONTRACTS.items() if n.startswith("The model contract"))
    worker = next(c for n, c in CONTRACTS.items() if n.startswith("The worker"))
    assert training <= set(contract["forbidden_modules"])
    assert training <= set(worker["forbidden_modules"])


@pytest.mark.skipif(shutil.which("lint-imports") is None, reason="import-linter not installed")
def test_lint_imports_passes() -> None:
    done = subprocess.run(["lint-imports"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
