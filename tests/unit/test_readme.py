"""The README documents what the code has: every setting, every console subcommand."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from stream.settings import Settings, env_name

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


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
