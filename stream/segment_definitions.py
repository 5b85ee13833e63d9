"""Segment definitions: the file format, its validation, and compiling the CEL conditions.

A definitions file (``PORTRAIT_SEGMENTS__PATH``) is YAML or JSON, ``{"segments": [...]}``; each
segment has a slug ``name``, a ``description``, an ``enter`` condition and an optional ``exit``
condition (:mod:`stream.segments` evaluates them). Conditions are compiled once with PyPI
``common-expression-language`` (Rust bindings of the ``cel`` crate); a syntax error names the
segment, the condition and the parser's line and column.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cel
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from models.contract.errors import ConfigError
from stream.settings import Settings

__all__ = [
    "MAX_SEGMENTS",
    "Segment",
    "SegmentDefinition",
    "compile_segments",
    "compiled_segments",
    "load_segments",
]

MAX_SEGMENTS = 100
"""At most this many segments: their names are metric label values, which must stay bounded."""

_FIELD = re.compile(r"\bprofile\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)")
_WHOLE_PROFILE = re.compile(r"\bprofile\b(?!\s*\.)")


class SegmentDefinition(BaseModel):
    """One segment as written in the definitions file.

    Attributes:
        name: A slug (lower-case letters, digits and ``-``, 1-63 chars): the segment's id in
            ``segment-events.v1``, in the profile and in metric labels.
        description: What the segment means, for people.
        enter: CEL condition over ``profile`` and ``now_ms``; true -> the user enters.
        exit: CEL condition; true -> a member exits. ``None``: exits when ``enter`` is false.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
    description: str = Field(min_length=1, max_length=1000)
    enter: str = Field(min_length=1, max_length=4000)
    exit: str | None = Field(default=None, min_length=1, max_length=4000)

    @property
    def version(self) -> str:
        """The definition's version: sha256 of its name and conditions (12 hex digits)."""
        canonical = json.dumps([self.name, self.enter, self.exit], ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


class _SegmentFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    segments: list[SegmentDefinition] = Field(max_length=MAX_SEGMENTS)

    @field_validator("segments")
    @classmethod
    def _unique(cls, segments: list[SegmentDefinition]) -> list[SegmentDefinition]:
        names = [s.name for s in segments]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"segment names must be unique; repeated: {', '.join(twice)}")
        return segments


def load_segments(path: Path) -> list[SegmentDefinition]:
    """Read and validate a definitions file (``{"segments": [...]}``, YAML or JSON).

    Args:
        path: ``PORTRAIT_SEGMENTS__PATH``; ``.yaml``/``.yml`` is read as YAML, else JSON.

    Returns:
        The definitions, in file order.

    Raises:
        ConfigError: The file cannot be read or parsed, or a definition is invalid; the message
            names the file and the field.
    """
    setting = "PORTRAIT_SEGMENTS__PATH"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{setting}={path}: cannot read it ({exc})", env_vars=[setting]) from exc
    as_yaml = path.suffix.lower() in (".yaml", ".yml")
    try:
        data = yaml.safe_load(text) if as_yaml else json.loads(text)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "YAML" if as_yaml else "JSON"
        problem = f"{setting}={path}: not valid {kind} ({exc})"
        raise ConfigError(problem, env_vars=[setting]) from exc
    try:
        return _SegmentFile.model_validate(data).segments
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise ConfigError(f"{setting}={path}: {problems}", env_vars=[setting]) from exc


@dataclass(frozen=True)
class Segment:
    """A compiled segment.

    Attributes:
        definition: As written.
        version: ``definition.version``.
        enter: The compiled ``enter`` condition.
        exit: The compiled ``exit`` condition, or ``None`` (exit when ``enter`` is false).
        fields: The profile fields the conditions read; ``None`` = the whole profile.
    """

    definition: SegmentDefinition
    version: str
    enter: Any
    exit: Any | None
    fields: frozenset[str] | None


def _compile(definition: SegmentDefinition, which: Literal["enter", "exit"]) -> Any:
    source = getattr(definition, which)
    try:
        return cel.compile(source)
    except ValueError as exc:
        detail = str(exc).split("ERROR: ", 1)[-1].replace("<input>:", "line:column ")
        raise ConfigError(
            f"segment {definition.name!r}, {which} condition does not compile: {detail}",
            env_vars=["PORTRAIT_SEGMENTS__PATH"],
        ) from exc


def _fields(*sources: str | None) -> frozenset[str] | None:
    text = " ".join(s for s in sources if s)
    if _WHOLE_PROFILE.search(text):
        return None
    return frozenset(_FIELD.findall(text))


def compile_segments(definitions: Iterable[SegmentDefinition]) -> list[Segment]:
    """Compile every condition once.

    Raises:
        ConfigError: A condition does not compile; the message names the segment, the condition
            and the parser's error with its line and column.
    """
    compiled = []
    for definition in definitions:
        enter = _compile(definition, "enter")
        leave = _compile(definition, "exit") if definition.exit is not None else None
        fields = _fields(definition.enter, definition.exit)
        compiled.append(Segment(definition, definition.version, enter, leave, fields))
    return compiled


def compiled_segments(settings: Settings) -> list[Segment]:
    """The segments of ``PORTRAIT_SEGMENTS__PATH``, compiled; ``[]`` when it is unset.

    Raises:
        ConfigError: The file or a definition is invalid, or a condition does not compile.
    """
    path = settings.segments.path
    return [] if path is None else compile_segments(load_segments(path))
