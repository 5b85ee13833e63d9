"""The JSON Schemas in schemas/ match the models the worker uses, and describe real payloads.

The committed files must equal what ``portrait schemas`` generates now; events the worker's
decoders accept validate against the source schemas (and events they reject as ``invalid_field``
do not); a profile update built by the real aggregation code validates against
``profile-updates.v1.json`` and has exactly the fields the schema lists; the dead-letter header
schema names exactly the headers the worker writes, and every reason code it produces.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from typer.testing import CliRunner

from models.contract.errors import EventError, InferenceError
from stream.aggregate import apply_behavior, apply_comment
from stream.events import (
    ProfileUpdate,
    dead_letter_headers,
    decode_behavior,
    decode_comment,
    decode_erasure,
)
from stream.processing import SourceRecord, check_key, dead_letter_record_headers
from stream.profile import Profile, ScoredComment
from stream.records import check_event_time, check_partition
from stream.settings import ProfileSettings
from stream.tools.cli import app
from stream.tools.schemas import DEAD_LETTER_REASONS, build_schemas, stale_files

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"


def _validator(name: str) -> Draft202012Validator:
    """A validator of a committed schema that checks ``format`` too (``date-time`` is checked by
    rfc3339-validator, a test dependency)."""
    schema = json.loads((SCHEMAS_DIR / name).read_text())
    Draft202012Validator.check_schema(schema)
    checker = Draft202012Validator.FORMAT_CHECKER
    assert "date-time" in checker.checkers, "pip install rfc3339-validator"
    return Draft202012Validator(schema, format_checker=checker)


def test_committed_schemas_match_the_models() -> None:
    assert stale_files(SCHEMAS_DIR) == [], "run: portrait schemas --out schemas"
    assert sorted(p.name for p in SCHEMAS_DIR.glob("*.json")) == sorted(build_schemas())


def test_schemas_command_writes_and_checks(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["schemas", "--out", str(tmp_path), "--check"])
    written = runner.invoke(app, ["schemas", "--out", str(tmp_path)])
    checked = runner.invoke(app, ["schemas", "--out", str(tmp_path), "--check"])

    assert missing.exit_code == 1
    assert written.exit_code == 0 and len(written.stdout.split()) == len(build_schemas())
    assert checked.exit_code == 0


def _properties_without_description(node: Any, path: str = "") -> list[str]:
    found = []
    if isinstance(node, dict):
        for name, prop in (node.get("properties") or {}).items():
            if not prop.get("description"):
                found.append(f"{path}/{name}")
        for key, value in node.items():
            found += _properties_without_description(value, f"{path}/{key}")
    return found


@pytest.mark.parametrize("name", sorted(build_schemas()))
def test_every_field_is_described(name: str) -> None:
    schema = json.loads((SCHEMAS_DIR / name).read_text())
    assert schema["description"] and schema["title"]
    assert _properties_without_description(schema) == []
    assert ":data:" not in json.dumps(schema) and "``" not in json.dumps(schema)


ACCEPTED_COMMENTS = [
    {"event_id": "c1", "user_id": "u", "text": "great", "event_time": "2024-05-01T12:00:00Z"},
    {"event_id": "c2", "user_id": "u", "text": "", "event_time": 1714564800000},
    {"event_id": "c3", "user_id": "u", "text": "ok", "event_time": "2024-05-01t12:00:00z",
     "rating": 4, "item_id": "i", "category": "books", "lang": "en", "unknown_field": [1, 2]},
]  # fmt: skip
REJECTED_COMMENTS = [
    {"event_id": "c4", "text": "no user", "event_time": 1714564800000},
    {"event_id": "", "user_id": "u", "text": "empty id", "event_time": 1714564800000},
    {"event_id": "c5", "user_id": "u", "text": "bad rating", "rating": 6, "event_time": 1},
    {"event_id": "c6", "user_id": "u", "event_time": 1},
]
ACCEPTED_BEHAVIORS = [
    {"event_id": "b1", "user_id": "u", "action": "view", "event_time": 1714564800000},
    {"event_id": "b2", "user_id": "u", "action": "purchase", "value": 9.5, "item_id": "i",
     "category": "books", "event_time": "2024-05-01T12:00:00+02:00"},
]  # fmt: skip
REJECTED_BEHAVIORS = [
    {"event_id": "b3", "user_id": "u", "action": "teleport", "event_time": 1},
    {"event_id": "b4", "user_id": "u", "event_time": 1},
]

ACCEPTED_ERASURES = [
    {"request_id": "r1", "user_id": "u", "requested_at": "2024-05-01T12:00:00Z"},
    {"request_id": "r2", "user_id": "u", "requested_at": 1714564800000, "reason": "user asked"},
]
REJECTED_ERASURES = [
    {"request_id": "r3", "requested_at": 1714564800000},
    {"request_id": "r4", "user_id": "", "requested_at": 1714564800000},
    {"user_id": "u", "requested_at": 1714564800000},
]


def _reason(decode: Any, event: dict[str, Any]) -> str | None:
    try:
        decode(json.dumps(event).encode())
    except EventError as exc:
        return exc.reason
    return None


@pytest.mark.parametrize(
    ("name", "decode", "accepted", "rejected"),
    [
        ("comments.v1.json", decode_comment, ACCEPTED_COMMENTS, REJECTED_COMMENTS),
        ("behavior.v1.json", decode_behavior, ACCEPTED_BEHAVIORS, REJECTED_BEHAVIORS),
        ("erasure.v1.json", decode_erasure, ACCEPTED_ERASURES, REJECTED_ERASURES),
    ],
)
def test_source_schema_agrees_with_the_decoder(
    name: str, decode: Any, accepted: list[dict[str, Any]], rejected: list[dict[str, Any]]
) -> None:
    validator = _validator(name)
    for event in accepted:
        assert _reason(decode, event) is None, event
        assert validator.is_valid(event), event
    for event in rejected:
        assert _reason(decode, event) == "invalid_field", event
        assert not validator.is_valid(event), event


def _real_profile_update() -> dict[str, Any]:
    settings = ProfileSettings(top_k_categories=3, last_n_comments=2)
    profile = Profile(user_id="u-42")
    for offset, event in enumerate(ACCEPTED_COMMENTS):
        scored = ScoredComment(decode_comment(json.dumps(event).encode()), (0.1, 0.2, 0.7))
        apply_comment(profile, scored, topic="comments.v1", partition=0, offset=offset,
                      settings=settings)  # fmt: skip
    for offset, event in enumerate(ACCEPTED_BEHAVIORS):
        apply_behavior(profile, decode_behavior(json.dumps(event).encode()), topic="behavior.v1",
                       partition=1, offset=offset, settings=settings)  # fmt: skip
    update = ProfileUpdate(user_id=profile.user_id, version=profile.version,
                           updated_at=datetime.now(UTC), model_version="m1",
                           profile=profile.to_dict())  # fmt: skip
    loaded: dict[str, Any] = json.loads(update.to_json_bytes())
    return loaded


def test_real_profile_update_validates_and_has_exactly_the_schema_fields() -> None:
    validator = _validator("profile-updates.v1.json")
    update = _real_profile_update()
    defs = validator.schema["$defs"]

    errors = [error.message for error in validator.iter_errors(update)]

    assert errors == []
    assert set(update) == set(validator.schema["properties"])
    profile = update["profile"]
    assert set(profile) == set(defs["Profile"]["properties"])
    assert profile["interests"] and profile["recent_comments"] and profile["categories"]
    for interest in profile["interests"]:
        assert set(interest) == set(defs["Interest"]["properties"])
    for stats in profile["categories"].values():
        assert set(stats) == set(defs["CategoryStats"]["properties"])
    for comment in profile["recent_comments"]:
        assert set(comment) == set(defs["RecentComment"]["properties"])


def test_profile_update_missing_a_field_is_invalid() -> None:
    validator = _validator("profile-updates.v1.json")
    update = _real_profile_update()
    del update["profile"]["sentiment_score"]

    assert not validator.is_valid(update)


def _produced_reasons() -> set[str]:
    """Reason codes the worker's own code produces for a battery of bad records."""
    bad_values = [None, b"", b"\xff\xfe", b"not json", b"[1]", b'{"event_id": "x"}']
    reasons = set()
    for value in bad_values:
        try:
            decode_comment(value)
        except EventError as exc:
            reasons.add(exc.reason)
    record = SourceRecord(topic="comments.v1", partition=0, offset=1, key=b"other", value=b"{}")
    try:
        check_key(record, "u")
    except EventError as exc:
        reasons.add(exc.reason)
    for check in (
        lambda: check_partition(record, "other", 4),  # murmur2("other") % 4 != 0
        lambda: check_event_time(datetime(2999, 1, 1, tzinfo=UTC), datetime.now(UTC)),
    ):
        try:
            check()
        except EventError as exc:
            reasons.add(exc.reason)  # fmt: skip
    for error in (InferenceError("onnxruntime failed"), EventError("not_json", "x")):
        headers = dict(dead_letter_record_headers(record, error))
        reasons.add(headers["portrait.error.reason"].decode())
    headers = dict(dead_letter_headers("comments.v1", 0, 1, RuntimeError("boom")))
    reasons.add(headers["portrait.error.reason"].decode())
    return reasons


def test_dead_letter_header_schema_names_every_header_and_reason() -> None:
    validator = _validator("dead-letter-headers.v1.json")
    record = SourceRecord(topic="comments.v1", partition=3, offset=17, key=b"u", value=b"x",
                          headers=(("trace-id", b"abc"),))  # fmt: skip
    headers = dead_letter_record_headers(record, EventError("not_json", "value is not JSON"))
    as_object = {name: value.decode() for name, value in headers}

    assert validator.is_valid(as_object)
    portrait_headers = [name for name, _ in headers if name.startswith("portrait.")]
    assert portrait_headers == validator.schema["required"]
    assert _produced_reasons() == set(DEAD_LETTER_REASONS)


@pytest.mark.parametrize("field", ["user_id", "event_id"])
@pytest.mark.parametrize("blank", ["", " ", "\t\n  "])
def test_blank_ids_are_rejected_by_schema_and_worker_alike(field: str, blank: str) -> None:
    from models.contract.errors import EventError
    from stream.events import decode_comment

    event = {"event_id": "e1", "user_id": "u1", "text": "hi",
             "event_time": "2026-11-29T18:04:05Z", field: blank}  # fmt: skip
    assert not _validator("comments.v1.json").is_valid(event)
    with pytest.raises(EventError) as info:
        decode_comment(json.dumps(event).encode())
    assert info.value.reason == "invalid_field" and field in info.value.detail
    if blank:  # "" fails the length check first
        assert f"{field}: must not be blank" in info.value.detail
    event[field] = " x "  # not blank: kept as given
    assert _validator("comments.v1.json").is_valid(event)
    assert getattr(decode_comment(json.dumps(event).encode()), field) == " x "
