"""JSON Schemas of Portrait's topics, generated from the models the worker itself uses.

``portrait schemas --out schemas/`` writes one JSON Schema (draft 2020-12) per file:

- ``comments.v1.json``, ``behavior.v1.json``, ``erasure.v1.json``: what the worker *accepts*
  (pydantic validation mode of :class:`~stream.events.CommentEvent`,
  :class:`~stream.events.BehaviorEvent` and :class:`~stream.events.ErasureRequest`).
- ``profile-updates.v1.json``: what the worker *emits* (serialization mode of
  :class:`~stream.events.ProfileUpdate`, its ``profile`` object described by
  :class:`~stream.profile.Profile` plus the derived figures of :meth:`Profile.to_dict`).
- ``dead-letter-headers.v1.json``: the ``portrait.*`` headers of a dead-letter record, as an object
  of header name -> UTF-8 string (Kafka headers are not JSON; the schema documents them).

Field descriptions come from the ``Attributes:`` sections of the models' docstrings (a pydantic
``Field(description=...)`` takes precedence), so the schemas and the code share one text.
``tests/unit/test_schemas.py`` regenerates the files and fails when the committed ones differ.
"""

from __future__ import annotations

import inspect
import json
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter

from stream import events, processing, profile, records
from stream.events import (
    BehaviorEvent,
    CommentEvent,
    ErasureRequest,
    ProfileUpdate,
    SegmentEvent,
)
from stream.labels import Correction
from stream.profile import Profile

__all__ = ["DEAD_LETTER_REASONS", "SCHEMA_DIALECT", "build_schemas", "stale_files", "write_schemas"]

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

DEAD_LETTER_REASONS = (
    "tombstone", "empty_value", "not_utf8", "not_json", "not_an_object", "invalid_field",
    processing.KEY_MISMATCH, records.WRONG_PARTITION, records.EVENT_TIME_OUT_OF_RANGE,
    processing.INFERENCE_FAILED, "internal_error",
)  # fmt: skip
"""Every ``portrait.error.reason`` value the worker writes (``EventError`` reasons, the key and
partition checks, the event-time range, failed inference, and ``internal_error`` for any other
exception)."""

_ROLE = re.compile(r":\w+:`~?([\w.]+)`")
_CONSTANTS: dict[str, object] = {
    "LABELS": profile.LABELS,
    "BEHAVIOR_ACTIONS": events.BEHAVIOR_ACTIONS,
    "SCHEMA_VERSION": profile.SCHEMA_VERSION,
}
_KEYED_BY_USER = " Kafka record key: the UTF-8 bytes of `user_id`. Unknown fields are ignored."
_UPDATE_NOTE = (
    " Kafka record key: the UTF-8 bytes of `user_id`. A record with a null value (a tombstone)"
    " means the user's profile was erased (`erasure.v1`): delete it; a later update starts the"
    " user again."
)
_PROFILE_DOC = (
    "A user's whole profile (`Profile.to_dict()`): the stored state, then the derived figures "
    "`mean_probabilities`, `mixed_share`, `sentiment_score`, `rating_mean` and `interests`. "
    "Decayed figures use exponential decay over event time with half-life `half_life_s`, "
    "relative to `last_event_time_ms` (forward decay: Cormode et al., ICDE 2009). Its size is "
    "bounded whatever the user's history."
)


@dataclass(frozen=True)
class Interest:
    """One entry of a profile's ``interests``, highest ``activity`` first.

    Attributes:
        category: The interest category (the events' ``category``).
        activity: Decayed count of the user's events in the category at the user's latest event
            time (every event counts 1 before decay).
        sentiment_score: Decayed mean of ``p_positive - p_negative`` over the user's comments in
            the category, in [-1, 1]; null without comments there.
        positive_count: The user's comments in the category whose predicted (whole-comment)
            label is positive; not decayed.
        negative_count: The user's comments in the category whose predicted label is negative.
    """

    category: str
    activity: float
    sentiment_score: float | None
    positive_count: int
    negative_count: int


def _plain(text: str) -> str:
    """Docstring markup -> plain text: roles resolved or stripped, double backticks single."""

    def role(match: re.Match[str]) -> str:
        name = match.group(1).rsplit(".", 1)[-1]
        value = _CONSTANTS.get(name)
        if isinstance(value, tuple):
            return ", ".join(f'"{v}"' for v in value)
        return f"`{name}`" if value is None else f"{value}"

    return _ROLE.sub(role, text).replace("``", "`").replace("`None`", "null")


def _summary(cls: type) -> str:
    """The first paragraph of ``cls``'s docstring, as plain text on one line."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    return _plain(" ".join(doc.split("\n\n", 1)[0].split()))


def _attribute_docs(cls: type) -> dict[str, str]:
    """``name -> text`` from the Google-style ``Attributes:`` section of ``cls``'s docstring."""
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    docs: dict[str, str] = {}
    name = None
    inside = False
    for line in lines:
        if line.strip() == "Attributes:":
            inside = True
            continue
        if not inside:
            continue
        if line and not line.startswith(" "):
            break  # the next section
        entry = re.match(r"^    (\w+)(?: \(.*?\))?: (.*)$", line)
        if entry:
            name, docs[entry.group(1)] = entry.group(1), entry.group(2)
        elif name and line.strip():
            docs[name] += " " + line.strip()
    return {key: _plain(text) for key, text in docs.items()}


def _describe(schema: dict[str, Any], cls: type, note: str = "") -> None:
    """Set the summary and fill each property's missing description from ``cls``'s docstring."""
    attrs = _attribute_docs(cls)
    schema["description"] = _summary(cls) + note
    for name, prop in schema.get("properties", {}).items():
        if "description" not in prop and name in attrs:
            prop["description"] = attrs[name]


def _property_doc(func: Callable[..., Any]) -> str:
    return _plain(" ".join(inspect.cleandoc(func.__doc__ or "").split("\n\n", 1)[0].split()))


def _derived_properties() -> dict[str, Any]:
    """Schemas of the figures :meth:`Profile.to_dict` adds to the stored state."""
    derived: dict[str, Any] = {}
    for name in ("mean_probabilities", "mixed_share", "sentiment_score", "rating_mean"):
        getter = getattr(Profile, name).fget
        kind = typing.get_type_hints(getter, vars(profile))["return"]
        derived[name] = TypeAdapter(kind).json_schema() | {"description": _property_doc(getter)}
    derived["interests"] = {
        "type": "array",
        "items": {"$ref": "#/$defs/Interest"},
        "description": "Interest categories by decayed activity, highest first (at most "
        "`PORTRAIT_PROFILE__TOP_K_CATEGORIES`).",
    }
    return derived


def _profile_defs() -> dict[str, Any]:
    """``$defs`` for the ``profile`` object: Profile, its nested dataclasses and Interest."""
    generated = TypeAdapter(Profile).json_schema(mode="serialization")
    defs: dict[str, Any] = generated.pop("$defs", {})
    defs["Profile"] = generated
    defs["Interest"] = TypeAdapter(Interest).json_schema()
    for name, schema in defs.items():
        owner = Interest if name == "Interest" else getattr(profile, name)
        _describe(schema, owner)
    defs["Profile"]["description"] = _PROFILE_DOC
    defs["Profile"]["properties"].update(_derived_properties())
    for schema in defs.values():  # to_dict writes every field, null included
        schema["required"] = list(schema["properties"])
    return defs


def _event_schema(model: type[BaseModel], topic: str) -> dict[str, Any]:
    schema = model.model_json_schema(mode="validation")
    _describe(schema, model, _KEYED_BY_USER)
    return {"$schema": SCHEMA_DIALECT, **schema, "title": topic}


def _profile_updates_schema() -> dict[str, Any]:
    schema = ProfileUpdate.model_json_schema(mode="serialization")
    _describe(schema, ProfileUpdate, _UPDATE_NOTE)
    schema["properties"]["profile"] = {
        "$ref": "#/$defs/Profile",
        "description": "The user's whole current profile (`Profile.to_dict()`).",
    }
    schema["$defs"] = _profile_defs()
    return {"$schema": SCHEMA_DIALECT, **schema, "title": "profile-updates.v1"}


_SEGMENT_NOTE = (
    " Kafka record key: the UTF-8 bytes of `user_id`. At least once: keep one event per"
    " (`user_id`, `segment`, `version`)."
)


def _output_schema(model: type[BaseModel], title: str, note: str) -> dict[str, Any]:
    """The schema of a value Portrait writes: every field required (null included)."""
    schema = model.model_json_schema(mode="serialization")
    _describe(schema, model, note)
    schema["required"] = list(schema["properties"])  # every field is written, null included
    return {"$schema": SCHEMA_DIALECT, **schema, "title": title}


_LABELS_NOTE = (
    " Kafka record key: the UTF-8 bytes of `user_id`. A null value (tombstone) erases every"
    " earlier correction of that user; the last correction per (`user_id`, `event_id`) counts."
)


_HEADER_DOCS = {
    events.HEADER_SOURCE_TOPIC: "Topic of the original record, e.g. `comments.v1`.",
    events.HEADER_SOURCE_PARTITION: "Partition of the original record (decimal integer).",
    events.HEADER_SOURCE_OFFSET: "Offset of the original record (decimal integer).",
    events.HEADER_ERROR_CLASS: "Python class of the error, e.g. `EventError`.",
    events.HEADER_ERROR_REASON: "Short machine code of the failure; also the `reason` label of "
    "`portrait_events_dead_lettered_total`.",
    events.HEADER_ERROR_DETAIL: "Human-readable cause, at most 1000 characters; names fields, "
    "never their values.",
}


def _dead_letter_headers_schema() -> dict[str, Any]:
    properties: dict[str, Any] = {
        name: {"type": "string", "description": text} for name, text in _HEADER_DOCS.items()
    }
    properties[events.HEADER_SOURCE_PARTITION]["pattern"] = "^[0-9]+$"
    properties[events.HEADER_SOURCE_OFFSET]["pattern"] = "^[0-9]+$"
    properties[events.HEADER_ERROR_REASON]["examples"] = list(DEAD_LETTER_REASONS)
    properties[events.HEADER_ERROR_REASON]["description"] += " Known values: " + ", ".join(
        f"`{reason}`" for reason in DEAD_LETTER_REASONS
    )
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "portrait-dlq.v1 headers",
        "description": "Headers of a dead-letter record, as header name -> value (UTF-8). The "
        "record keeps the original key and value bytes untouched and the original headers after "
        "these.",
        "type": "object",
        "properties": properties,
        "required": list(properties),
    }


def build_schemas() -> dict[str, dict[str, Any]]:
    """Every schema, by file name.

    Returns:
        ``{"comments.v1.json": {...}, ...}``: JSON-ready dicts, deterministic for a code version.
    """
    return {
        "comments.v1.json": _event_schema(CommentEvent, "comments.v1"),
        "behavior.v1.json": _event_schema(BehaviorEvent, "behavior.v1"),
        "erasure.v1.json": _event_schema(ErasureRequest, "erasure.v1"),
        "profile-updates.v1.json": _profile_updates_schema(),
        "segment-events.v1.json": _output_schema(SegmentEvent, "segment-events.v1", _SEGMENT_NOTE),
        "labels.v1.json": _output_schema(Correction, "labels.v1", _LABELS_NOTE),
        "dead-letter-headers.v1.json": _dead_letter_headers_schema(),
    }


def _dumps(schema: Mapping[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write_schemas(out_dir: Path) -> list[Path]:
    """Write every schema into ``out_dir`` (created if missing).

    Returns:
        The files written.

    Raises:
        OSError: ``out_dir`` cannot be created or written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in build_schemas().items():
        path = out_dir / name
        path.write_text(_dumps(schema), encoding="utf-8")
        written.append(path)
    return written


def stale_files(out_dir: Path) -> list[str]:
    """Names of schema files in ``out_dir`` that are missing or differ from the generated ones."""
    stale = []
    for name, schema in build_schemas().items():
        path = out_dir / name
        if not path.is_file() or path.read_text(encoding="utf-8") != _dumps(schema):
            stale.append(name)
    return stale
