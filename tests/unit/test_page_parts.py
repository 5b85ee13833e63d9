"""The profile page's parts without a broker: the view, the HTML, corrections, auth, settings."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from models.contract.errors import ConfigError
from models.data import load_table
from stream.aggregate import apply_comment
from stream.events import CommentEvent, ProfileUpdate
from stream.labels import Correction, live_corrections, training_rows
from stream.profile import Profile, ScoredComment
from stream.settings import PageSettings, ProfileSettings, Settings, load_settings
from stream.tools.page.html import render_profile, sentiment_chart
from stream.tools.page.records import CommentRecord, parse_source
from stream.tools.page.view import build_view, text_pieces

MIXED = "Great to use, but the price is a bit high"


def _update(texts: list[tuple[str, tuple[str, ...]]]) -> dict[str, Any]:
    profile = Profile(user_id="ana")
    for i, (text, clauses) in enumerate(texts):
        event = CommentEvent(event_id=f"c{i}", user_id="ana", text=text, category="kitchen",
                             event_time=1_795_975_445_000 + i * 60_000)  # fmt: skip
        scored = ScoredComment(event, (0.25, 0.17, 0.58), bool(clauses), "m1", clauses)
        apply_comment(profile, scored, topic="comments.v1", partition=1, offset=10 + i,
                      settings=ProfileSettings())  # fmt: skip
    update = ProfileUpdate(user_id="ana", version=profile.version, model_version="m1",
                           updated_at="2026-12-01T00:00:00Z",
                           profile=profile.to_dict())  # fmt: skip
    return dict(json.loads(update.to_json_bytes()))


def test_text_pieces_join_back_and_carry_the_clause_labels() -> None:
    pieces = text_pieces(MIXED, ["Great to use", "but the price is a bit high"],
                         ["positive", "negative"])  # fmt: skip
    assert "".join(p["text"] for p in pieces) == MIXED
    assert [(p["text"], p["label"]) for p in pieces] == [
        ("Great to use", "positive"),
        (", ", None),
        ("but the price is a bit high", "negative"),
    ]


def test_the_view_pairs_the_mixed_comment_with_its_clause_labels() -> None:
    update = _update([(MIXED, ("positive", "negative")), ("Love it", ())])
    records = [CommentRecord(MIXED, "en"), CommentRecord(None, gone="retention")]
    view = build_view(update, records, max_clauses=8)
    newest, mixed = view["recent_comments"]  # newest first
    assert newest["text"] is None and newest["gone"] == "retention" and newest["pieces"] is None
    assert mixed["mixed"] and mixed["source"] == "comments.v1:1:10"
    assert mixed["model_version"] == "m1"
    assert [p["label"] for p in mixed["pieces"] if p["label"]] == ["positive", "negative"]
    assert view["label_shares"] == {"negative": 0.0, "neutral": 0.0, "positive": 1.0}
    assert view["daily"][0]["score"] == 1.0 and view["daily"][0]["comments"] == 2
    with pytest.raises(ValueError, match="1 records for 2"):
        build_view(update, records[:1], max_clauses=8)


def test_a_clause_split_that_changed_since_scoring_shows_the_plain_text() -> None:
    update = _update([(MIXED, ("positive", "negative", "neutral"))])  # 3 labels, 2 clauses now
    [comment] = build_view(update, [CommentRecord(MIXED)], max_clauses=8)["recent_comments"]
    assert comment["pieces"] is None and comment["text"] == MIXED


def test_the_page_escapes_comment_text_and_marks_the_clauses() -> None:
    hostile = "<script>alert(1)</script> great, but awful"
    update = _update([(MIXED, ("positive", "negative")), (hostile, ())])
    view = build_view(update, [CommentRecord(MIXED), CommentRecord(hostile)], max_clauses=8)
    html = render_profile(view, shown_id="<b>ana</b>", base="/users/ana")
    assert "<script>alert" not in html and "&lt;script&gt;" in html
    assert "<b>ana</b>" not in html
    assert 'class="clause positive" data-label="positive"' in html
    assert 'class="clause negative" data-label="negative"' in html
    assert html.count('class="wrong"') == 2 and 'action="/users/ana/corrections"' in html


def test_the_chart_has_a_slot_per_day_of_the_window() -> None:
    days = [{"day": "2026-11-01", "comments": 2, "events": 2, "score": -0.5},
            {"day": "2026-11-30", "comments": 1, "events": 1, "score": 1.0},
            {"day": "2026-10-01", "comments": 1, "events": 1, "score": 1.0}][::-1]  # fmt: skip
    svg = sentiment_chart(days)
    assert svg.count("<rect") == 2  # 2026-10-01 is outside the 30 days up to 2026-11-30
    assert 'fill="#d64541"' in svg and 'fill="#2e9e5b"' in svg and "2026-11-30" in svg
    assert "no events" in sentiment_chart([])


def _correction(user: str, event: str, label: str) -> bytes:
    return Correction(correction_id=f"{user}{event}{label}", user_id=user, event_id=event,
                      source="comments.v1:0:1", text=f"text of {event}", lang="en",
                      predicted_label="positive", probabilities=(0.2, 0.2, 0.6),
                      corrected_label=label, model_version="m1",  # type: ignore[arg-type]
                      corrected_at="2026-12-01T00:00:00Z").to_json_bytes()  # fmt: skip


def test_corrections_honour_erasure_and_second_thoughts(tmp_path: Path) -> None:
    records = [
        (b"ana", _correction("ana", "c1", "negative")),
        (b"bo", _correction("bo", "c7", "neutral")),
        (b"ana", _correction("ana", "c1", "neutral")),  # ana changed her mind: the last counts
        (b"eve", _correction("eve", "c2", "negative")),
        (b"eve", None),  # eve erased: her corrections are gone
        (b"bo", b"not json"),
    ]
    live = live_corrections(records)
    assert [(c.user_id, c.event_id, c.corrected_label) for c in live] == [
        ("bo", "c7", "neutral"),
        ("ana", "c1", "neutral"),
    ]
    out = tmp_path / "corrections.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in training_rows(live, weight=3.0)))
    rows = load_table(out)  # what `portrait train --data` reads
    assert [(r.text, r.label, r.lang, r.confidence) for r in rows] == [
        ("text of c7", "neutral", "en", 3.0),
        ("text of c1", "neutral", "en", 3.0),
    ]


def test_a_page_off_loopback_needs_a_token() -> None:
    with pytest.raises(ConfigError, match="PORTRAIT_PAGE__TOKEN"):
        load_settings(page={"host": "0.0.0.0"})
    for host in ("127.0.0.1", "localhost", "::1"):
        assert load_settings(page={"host": host}).page.host == host
    guarded = PageSettings(host="0.0.0.0", token=SecretStr("x" * 16))
    assert "x" * 16 not in repr(guarded)
    with pytest.raises(ConfigError) as short:
        load_settings(page={"token": "secret-ish"})
    assert "secret-ish" not in str(short.value)


def test_parse_source() -> None:
    assert parse_source("comments.v1:3:17") == ("comments.v1", 3, 17)
    assert parse_source("a:b:0:5") == ("a:b", 0, 5)
    with pytest.raises(ValueError):
        parse_source("comments.v1:x")


class _Follower:
    caught_up = threading.Event()
    failed = None
    records_read = 3


class _Server:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.follower = _Follower()
        self.follower.caught_up.set()

    def view(self, user_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        if user_id != "ana":
            return None
        update = _update([(MIXED, ("positive", "negative"))])
        return update, build_view(update, [CommentRecord(MIXED)], max_clauses=8)


def _status(settings: Settings, path: str, headers: dict[str, str] | None = None) -> int:
    from aiohttp.test_utils import TestClient, TestServer

    from stream.tools.page.server import make_app

    async def go() -> int:
        app = make_app(_Server(settings))  # type: ignore[arg-type]
        async with TestClient(TestServer(app)) as client:
            response = await client.get(path, headers=headers or {}, allow_redirects=False)
            return response.status

    return asyncio.run(go())


def test_the_routes_answer_404_for_unknown_users_and_check_the_token() -> None:
    open_settings = load_settings()
    assert _status(open_settings, "/users/ana") == 200
    assert _status(open_settings, "/api/users/ana") == 200
    assert _status(open_settings, "/api/users/bo") == 404
    assert _status(open_settings, "/users?id=ana") == 302
    guarded = load_settings(page={"host": "0.0.0.0", "token": "a-token-of-16-chars"})
    assert _status(guarded, "/api/users/ana") == 401
    assert _status(guarded, "/api/users/ana", {"Authorization": "Bearer nope"}) == 401
    right = {"Authorization": "Bearer a-token-of-16-chars"}
    assert _status(guarded, "/api/users/ana", right) == 200
    assert _status(guarded, "/healthz") == 200  # probes need no token
