"""Event schemas (``comments.v1``, ``behavior.v1``, ``profile-updates.v1``, ``erasure.v1``).

Source events arrive as raw bytes. :func:`decode_comment` and :func:`decode_behavior` turn them into
validated models or raise :class:`~models.contract.errors.EventError` with a short ``reason`` code;
the
worker then writes the original bytes to the dead-letter topic with the headers named by the
``HEADER_*`` constants below (see :func:`dead_letter_headers`).

Decoding policy:

- ``None`` (a tombstone) -> reason ``"tombstone"``; ``b""`` -> ``"empty_value"``.
- Bytes that are not UTF-8 -> ``"not_utf8"`` (a leading UTF-8 byte-order mark is accepted).
- Not JSON (including ``NaN``/``Infinity``, which JSON does not have) -> ``"not_json"``.
- JSON that is not an object (array, string, number, null) -> ``"not_an_object"``.
- An object that fails the schema (missing or mistyped field) -> ``"invalid_field"``.
- Lone UTF-16 surrogate escapes such as ``"\\ud83d"`` are valid JSON: they are replaced by U+FFFD
  and the event is accepted (the fast tokenizer cannot take lone surrogates).

Unknown fields are ignored, so producers may add fields without breaking the worker.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)

from models.contract.errors import EventError
from models.contract.text import replace_lone_surrogates
from stream.event_time import EPOCH, EVENT_TIME_OUT_OF_RANGE, EventTime, EventTimeOutOfRange

__all__ = [
    "BEHAVIOR_ACTIONS",
    "HEADER_ERROR_CLASS",
    "HEADER_ERROR_DETAIL",
    "HEADER_ERROR_REASON",
    "HEADER_SOURCE_OFFSET",
    "HEADER_SOURCE_PARTITION",
    "HEADER_SOURCE_TOPIC",
    "BehaviorEvent",
    "CommentEvent",
    "ErasureRequest",
    "ProfileUpdate",
    "SegmentEvent",
    "dead_letter_headers",
    "decode_behavior",
    "decode_comment",
    "decode_erasure",
    "replace_lone_surrogates",
]

HEADER_SOURCE_TOPIC = "portrait.source.topic"
HEADER_SOURCE_PARTITION = "portrait.source.partition"
HEADER_SOURCE_OFFSET = "portrait.source.offset"
HEADER_ERROR_CLASS = "portrait.error.class"
HEADER_ERROR_REASON = "portrait.error.reason"
HEADER_ERROR_DETAIL = "portrait.error.detail"

BEHAVIOR_ACTIONS = ("view", "click", "like", "share", "cart", "purchase", "return")
"""The ``action`` values of ``behavior.v1``, in the order profiles list them."""

_MAX_DETAIL_CHARS = 1000


_NOT_BLANK = r"\S"
"""An id holds at least one non-whitespace character (JSON Schema ``pattern`` semantics: found
anywhere, as pydantic matches it): a blank id would key a profile nobody can name."""


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: str = Field(min_length=1, max_length=256, pattern=_NOT_BLANK)
    user_id: str = Field(min_length=1, max_length=128, pattern=_NOT_BLANK)
    item_id: str | None = Field(default=None, max_length=256)
    category: str | None = Field(default=None, max_length=256)
    event_time: EventTime

    @property
    def event_time_ms(self) -> int:
        """Event time as integer epoch milliseconds (UTC)."""
        return (self.event_time - EPOCH) // timedelta(milliseconds=1)

    def to_json_bytes(self) -> bytes:
        """The event as UTF-8 JSON, ``event_time`` in RFC 3339; ``None`` fields left out."""
        return self.model_dump_json(exclude_none=True).encode("utf-8")


class CommentEvent(_Event):
    """A ``comments.v1`` event (key = user id).

    Attributes:
        event_id: Unique event id, 1-256 characters, not all whitespace.
        user_id: User id, 1-128 characters, not all whitespace.
        item_id: The commented item, optional.
        category: The item's category, optional, at most 256 characters.
        text: The comment text; may be empty. Personal data: never logged.
        rating: Star rating 1..5, optional.
        event_time: When the comment was written, timezone-aware UTC.
        lang: Language tag, optional (e.g. ``"en"``, ``"zh"``).
    """

    text: str
    rating: float | None = Field(default=None, ge=1, le=5, strict=True)  # "5" is not a number
    lang: str | None = Field(default=None, max_length=35)


class BehaviorEvent(_Event):
    """A ``behavior.v1`` event (key = user id).

    Attributes:
        event_id: Unique event id, 1-256 characters, not all whitespace.
        user_id: User id, 1-128 characters, not all whitespace.
        item_id: The item acted on, optional.
        category: The item's category, optional, at most 256 characters.
        action: One of :data:`BEHAVIOR_ACTIONS`.
        value: A number attached to the action, optional (e.g. the price of a purchase).
        event_time: When the action happened, timezone-aware UTC.
    """

    action: Literal["view", "click", "like", "share", "cart", "purchase", "return"]
    value: float | None = Field(default=None, allow_inf_nan=False, strict=True)


class ProfileUpdate(BaseModel):
    """A ``profile-updates.v1`` event (key = user id): the user's whole current profile.

    Attributes:
        user_id: The user.
        version: Increases by one with every change of this user's profile; a consumer keeps the
            highest version per user (a redelivered update carries the same version).
        updated_at: When the worker emitted this update, timezone-aware UTC.
        model_version: ``model_version`` of the sentiment model that scored the comments.
        profile: ``Profile.to_dict()`` of the user's profile.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    user_id: str
    version: int = Field(ge=0)
    updated_at: datetime
    model_version: str
    profile: dict[str, Any]

    def to_json_bytes(self) -> bytes:
        """The update as UTF-8 JSON (``updated_at`` as RFC 3339)."""
        return self.model_dump_json().encode("utf-8")


class SegmentEvent(BaseModel):
    """A ``segment-events.v1`` event (key = user id): a user entered or left a segment.

    At least once, like ``profile-updates.v1``: a transition emitted again after a crash carries
    the same ``version``; a consumer keeps one per (user, segment, version).

    Attributes:
        user_id: The user.
        segment: The segment's name (a slug from the definitions file).
        transition: ``entered`` or ``exited``.
        version: The profile version it happened at (the ``version`` of the profile update
            emitted with it).
        event_time: Event time of the user's latest event at that version, UTC.
        definition_version: Version of the segment definition that decided it (12 hex digits
            of the sha256 of its name and conditions).
        values: The profile fields the segment's conditions read, as they were.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    user_id: str
    segment: str
    transition: Literal["entered", "exited"]
    version: int = Field(ge=0)
    event_time: datetime | None
    definition_version: str
    values: dict[str, Any]

    def to_json_bytes(self) -> bytes:
        """The event as UTF-8 JSON (``event_time`` as RFC 3339)."""
        return self.model_dump_json().encode("utf-8")


class ErasureRequest(BaseModel):
    """An ``erasure.v1`` event (key = user id): forget everything about a user.

    Written by ``portrait forget``. The worker deletes the user's profile (the table's changelog
    gets a tombstone) and writes a tombstone (null value) for the user on ``profile-updates.v1``;
    the user's later events start a new profile. The topic is co-partitioned with the source
    topics (same partition count, key = user id), so one worker holds the user's events, profile
    and erasure requests.

    Attributes:
        request_id: Unique id of the request, 1-256 characters (for audit; never a user id).
        user_id: The user to forget, 1-128 characters, as in the source events (the worker
            pseudonymises it like the events' ``user_id`` when pseudonymisation is on).
        requested_at: When the request was made, timezone-aware UTC.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    request_id: str = Field(min_length=1, max_length=256, pattern=_NOT_BLANK)
    user_id: str = Field(min_length=1, max_length=128, pattern=_NOT_BLANK)
    requested_at: EventTime

    def to_json_bytes(self) -> bytes:
        """The request as UTF-8 JSON (``requested_at`` as RFC 3339)."""
        return self.model_dump_json().encode("utf-8")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _scrub(value: Any) -> Any:
    """Replace lone surrogates in every string of a decoded JSON value."""
    if isinstance(value, str):
        return replace_lone_surrogates(value)
    if isinstance(value, dict):
        return {replace_lone_surrogates(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _load_object(value: bytes | None) -> dict[str, Any]:
    """Bytes -> JSON object, or :class:`EventError` with the reason code."""
    if value is None:
        raise EventError("tombstone", "value is null (a tombstone), expected a JSON object")
    if len(value) == 0:
        raise EventError("empty_value", "value is empty, expected a JSON object")
    try:
        text = bytes(value).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise EventError(
            "not_utf8", f"value is not UTF-8 ({exc.reason} at byte {exc.start})"
        ) from exc
    try:
        loaded = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise EventError("not_json", f"value is not JSON ({exc})") from exc
    if not isinstance(loaded, dict):
        raise EventError(
            "not_an_object", f"JSON value is a {type(loaded).__name__}, expected object"
        )
    return dict(_scrub(loaded))


def _field_problems(exc: ValidationError) -> str:
    """``field: problem`` per error; never the input values (they may hold personal data)."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        field = ".".join(str(part) for part in error["loc"]) or "(event)"
        blank = (
            error["type"] == "string_pattern_mismatch"
            and error.get("ctx", {}).get("pattern") == _NOT_BLANK
        )
        message = error["msg"].removeprefix("Value error, ")  # pydantic's prefix for ValueError
        parts.append(f"{field}: {'must not be blank (whitespace only)' if blank else message}")
    return "; ".join(parts)[:_MAX_DETAIL_CHARS]


_M = TypeVar("_M", bound=BaseModel)


def _validate(model: type[_M], value: bytes | None) -> _M:
    """Bytes -> a validated ``model``, or :class:`EventError` with the reason code."""
    data = _load_object(value)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        causes = [error.get("ctx", {}).get("error") for error in exc.errors()]
        if all(isinstance(cause, EventTimeOutOfRange) for cause in causes):
            raise EventError(EVENT_TIME_OUT_OF_RANGE, _field_problems(exc)) from exc
        raise EventError("invalid_field", _field_problems(exc)) from exc


def decode_comment(value: bytes | None) -> CommentEvent:
    """Decode and validate a ``comments.v1`` value.

    Args:
        value: The raw Kafka record value (``None`` for a tombstone).

    Returns:
        The validated comment event.

    Raises:
        EventError: With ``reason`` ``"tombstone"``, ``"empty_value"``, ``"not_utf8"``,
            ``"not_json"``, ``"not_an_object"`` or ``"invalid_field"``.
    """
    return _validate(CommentEvent, value)


def decode_behavior(value: bytes | None) -> BehaviorEvent:
    """Decode and validate a ``behavior.v1`` value.

    Args:
        value: The raw Kafka record value (``None`` for a tombstone).

    Returns:
        The validated behaviour event.

    Raises:
        EventError: With ``reason`` ``"tombstone"``, ``"empty_value"``, ``"not_utf8"``,
            ``"not_json"``, ``"not_an_object"`` or ``"invalid_field"`` (e.g. an unknown
            ``action``).
    """
    return _validate(BehaviorEvent, value)


def decode_erasure(value: bytes | None) -> ErasureRequest:
    """Decode and validate an ``erasure.v1`` value.

    Args:
        value: The raw Kafka record value (``None`` for a tombstone).

    Returns:
        The validated erasure request.

    Raises:
        EventError: With the same ``reason`` codes as :func:`decode_comment`.
    """
    return _validate(ErasureRequest, value)


def dead_letter_headers(
    topic: str, partition: int, offset: int, error: BaseException
) -> list[tuple[str, bytes]]:
    """Headers of a dead-letter record, values UTF-8 bytes.

    Args:
        topic: Source topic of the original record.
        partition: Source partition.
        offset: Source offset.
        error: Why the record is dead-lettered; an :class:`EventError` gives its ``reason`` and
            ``detail``, any other exception gives reason ``"internal_error"`` and its class name
            (never its message, which might quote the input).

    Returns:
        ``[(HEADER_SOURCE_TOPIC, b"comments.v1"), ...]`` in the order of the ``HEADER_*`` constants.
    """
    if isinstance(error, EventError):
        reason, detail = error.reason, error.detail
    else:
        reason, detail = "internal_error", type(error).__name__
    values = (
        (HEADER_SOURCE_TOPIC, topic),
        (HEADER_SOURCE_PARTITION, str(partition)),
        (HEADER_SOURCE_OFFSET, str(offset)),
        (HEADER_ERROR_CLASS, type(error).__name__),
        (HEADER_ERROR_REASON, reason),
        (HEADER_ERROR_DETAIL, detail[:_MAX_DETAIL_CHARS]),
    )
    return [(name, text.encode("utf-8", "replace")) for name, text in values]
