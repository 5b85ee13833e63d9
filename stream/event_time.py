"""Event times: one rule for the JSON Schemas and the decoder.

An event time is an RFC 3339 ``date-time`` with its UTC offset (years 1970-2999) or epoch
milliseconds as a JSON number. :func:`parse_event_time` is the decoder's validator,
:data:`EVENT_TIME_JSON_SCHEMA` what ``portrait schemas`` writes for the same fields; a
well-formed time outside 1970-2999 raises :class:`EventTimeOutOfRange`, which the decoder
reports as :data:`EVENT_TIME_OUT_OF_RANGE`. Whether a time is plausible for the worker's clock
is :func:`stream.records.check_event_time`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

__all__ = [
    "EPOCH_MS_MAX",
    "EVENT_TIME_JSON_SCHEMA",
    "EVENT_TIME_OUT_OF_RANGE",
    "RFC3339_PATTERN",
    "EventTime",
    "EventTimeOutOfRange",
    "parse_event_time",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""The Unix epoch, UTC."""

RFC3339_PATTERN = (
    r"^(19[7-9][0-9]|2[0-9]{3})-[0-9]{2}-[0-9]{2}[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(\.[0-9]+)?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])(?![\s\S])"
)
"""An RFC 3339 ``date-time`` (section 5.6) with its UTC offset, years 1970-2999, no leap second.

``T`` and ``Z`` may be lower case (RFC 3339 5.6, note); the final lookahead ends the text in both
Python's and ECMA-262's regex dialects (Python's ``$`` also matches before a final newline). The
calendar (no 31 November) is checked by the parser and by JSON Schema's ``date-time`` format."""

EPOCH_MS_MAX = 32_503_680_000_000 - 1
"""Epoch milliseconds of 2999-12-31T23:59:59.999Z, the latest event time the format admits."""

_RFC3339_ANY_YEAR = re.compile(RFC3339_PATTERN.replace("(19[7-9][0-9]|2[0-9]{3})", "[0-9]{4}"))
_YEARS = range(1970, 3000)

EVENT_TIME_OUT_OF_RANGE = "event_time_out_of_range"
"""Dead-letter reason of an event time outside what the worker accepts: the format's years
1970-2999 here, and the plausible range around the worker's clock
(:func:`stream.records.check_event_time`)."""


class EventTimeOutOfRange(ValueError):
    """A well-formed event time outside 1970-2999; the decoder reports it as
    :data:`EVENT_TIME_OUT_OF_RANGE`, not ``invalid_field``."""


def parse_event_time(value: Any) -> datetime:
    """Parse an event time: an RFC 3339 string with a UTC offset, or epoch milliseconds.

    The one rule, the same in the JSON Schemas (:data:`EVENT_TIME_JSON_SCHEMA`): a string must
    match :data:`RFC3339_PATTERN` and be a real calendar date; a number is epoch milliseconds
    from 0 to :data:`EPOCH_MS_MAX`. Times without an offset are refused rather than guessed:
    "12:00" written in Shanghai and read as UTC is 8 hours late, which moves the half-life decay
    and every recency window without any error. Date-only values, ISO week dates and strings of
    digits (``"20261129"`` is not a time) are refused too. Whether the time is plausible (not far
    ahead of or behind the worker's clock) is checked later, by
    :func:`stream.records.check_event_time`.

    Args:
        value: An RFC 3339 string (``"2024-05-01T12:00:00Z"``, ``"2024-05-01T20:00:00+08:00"``),
            epoch milliseconds as a JSON number (int or float), or a timezone-aware ``datetime``.

    Returns:
        A timezone-aware UTC datetime (microsecond resolution; finer fractions are truncated).

    Raises:
        EventTimeOutOfRange: A well-formed time outside 1970-2999 (UTC).
        ValueError: The value is of another type, has no offset, or is not a valid time.
    """
    if isinstance(value, bool):
        raise ValueError("must be an RFC 3339 string or epoch milliseconds, not a boolean")
    if isinstance(value, int | float):
        if not 0 <= value <= EPOCH_MS_MAX:
            raise EventTimeOutOfRange(f"epoch milliseconds must be within 0..{EPOCH_MS_MAX}")
        return EPOCH + timedelta(milliseconds=value)
    if isinstance(value, str):
        if value.strip().isdigit():
            raise ValueError("epoch milliseconds must be a JSON number, not a string")
        if not _RFC3339_ANY_YEAR.match(value):  # the year range is checked below
            raise ValueError(
                "must be an RFC 3339 time with a UTC offset, e.g. 2024-05-01T12:00:00Z or "
                "2024-05-01T20:00:00+08:00"
            )
        try:
            value = datetime.fromisoformat(value.upper())
        except ValueError as exc:
            raise ValueError(f"not a calendar date: {exc}") from exc
    if not isinstance(value, datetime):
        raise ValueError("must be an RFC 3339 string or epoch milliseconds")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("has no UTC offset")
    try:
        parsed = value.astimezone(UTC)
    except OverflowError as exc:
        raise EventTimeOutOfRange("must be within 1970-2999 (UTC)") from exc
    if parsed.year not in _YEARS:
        raise EventTimeOutOfRange("must be within 1970-2999 (UTC)")
    return parsed


EVENT_TIME_JSON_SCHEMA = {
    "anyOf": [
        {"type": "string", "format": "date-time", "pattern": RFC3339_PATTERN,
         "description": "RFC 3339 time with a UTC offset (Z or +hh:mm), years 1970-2999"},
        {"type": "number", "minimum": 0, "maximum": EPOCH_MS_MAX,
         "description": "epoch milliseconds (UTC)"},
    ]
}  # fmt: skip
"""JSON Schema of what :func:`parse_event_time` accepts (``portrait schemas`` writes it). The
worker also refuses times far from its clock (``event_time_out_of_range``), which a schema cannot
say."""

EventTime = Annotated[
    datetime,
    BeforeValidator(parse_event_time),
    WithJsonSchema(EVENT_TIME_JSON_SCHEMA, mode="validation"),
]
