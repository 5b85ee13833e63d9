"""The README documents what the code has: every setting, every console subcommand, and
example events and a profile update that validate against schemas/."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from pydantic import BaseModel

from stream.settings import Settings, env_name

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"


def _env_names(model: type[BaseModel], loc: tuple[str, ...] = ()) -> list[str]:
    names = []
    for field, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            names += _env_names(ann, (*loc, field))
        else:
            names.append(env_name((*loc, field)))
    return names


def test_every_setting_is_in_the_readme() -> None:
    names = _env_names(Settings)
    assert len(names) > 20
    missing = [n for n in names if f"`{n}`" not in README]
    assert missing == []


def test_every_subcommand_is_in_the_readme() -> None:
    from stream.tools.cli import app

    commands = [c.name or c.callback.__name__ for c in app.registered_commands]  # type: ignore[union-attr]
    missing = [c for c in commands if f"portrait {c}" not in README]
    assert missing == []


def _json_blocks() -> list[Any]:
    """Every fenced ```json block of the README, parsed."""
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", README, re.S)]


def _schema_for(example: dict[str, Any]) -> str | None:
    if "profile" in example:
        return "profile-updates.v1.json"
    if "action" in example:
        return "behavior.v1.json"
    if "text" in example:
        return "comments.v1.json"
    if "requested_at" in example:
        return "erasure.v1.json"
    return None


def test_the_readme_examples_validate_against_the_schemas() -> None:
    checker = Draft202012Validator.FORMAT_CHECKER
    checked = []
    for example in _json_blocks():
        name = _schema_for(example) if isinstance(example, dict) else None
        if name is None:
            continue
        schema = json.loads((SCHEMAS_DIR / name).read_text())
        errors = [e.message for e in Draft202012Validator(schema, format_checker=checker)
                  .iter_errors(example)]  # fmt: skip
        assert errors == [], (name, errors)
        checked.append(name)
    assert {"comments.v1.json", "behavior.v1.json", "profile-updates.v1.json"} <= set(checked)
