"""``portrait page``: the profile page and its JSON API over HTTP (aiohttp).

Routes (``{id}`` is the user id as producers write it; with pseudonymisation on it is hashed
before the lookup, as the worker hashes it):

- ``GET /``: a form to look a user up; ``GET /users?id=...`` redirects to the user's page.
- ``GET /users/{id}``: the page (HTML); ``GET /api/users/{id}``: the same data as JSON.
- ``POST /users/{id}/corrections`` (form: ``event_id``, ``corrected_label``): writes a correction
  to ``labels.v1`` and redirects back to the page (303); ``POST /api/users/{id}/corrections``
  (JSON, same fields) answers 201 with the correction.
- ``GET /healthz``: 200 once the profiles were read up to the end of the topic, else 503.

A user without a profile (never seen, or erased) is 404 on every route. With
``PORTRAIT_PAGE__TOKEN`` set, every route but ``/healthz`` needs ``Authorization: Bearer <token>``
(401 otherwise; compared in constant time).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from aiohttp import web

from stream.kafka_admin import kafka_client_config
from stream.labels import Correction, corrected_at_now
from stream.privacy import Pseudonymiser
from stream.settings import Settings
from stream.tools.page.follower import ProfileFollower
from stream.tools.page.html import render_home, render_message, render_profile
from stream.tools.page.records import RecordReader
from stream.tools.page.view import build_view

__all__ = ["PageServer", "make_app", "serve_page"]

logger = logging.getLogger(__name__)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class PageServer:
    """The state behind the routes: the follower, the record reader and the producer.

    Args:
        settings: Portrait's settings (Kafka, topics, mixed, pseudonymisation, page, state dir).
    """

    def __init__(self, settings: Settings) -> None:
        from kafka import KafkaProducer

        self.settings = settings
        config = kafka_client_config(settings.kafka)
        self.pseudonymise = Pseudonymiser(settings.pseudonymisation)
        self.follower = ProfileFollower(config, settings.topics.profile_updates,
                                        settings.state_dir / "page")  # fmt: skip
        self.reader = RecordReader(config, self.pseudonymise)
        self.producer = KafkaProducer(**config, acks="all")

    def start(self) -> None:
        """Start following the profile updates."""
        self.follower.start()

    def close(self) -> None:
        """Stop the follower, close the clients."""
        self.follower.stop()
        self.reader.close()
        self.producer.close(timeout=5)

    def view(self, user_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """``(update, view)`` of the user (as typed), or ``None`` without a profile. Blocking."""
        update = self.follower.get(self.pseudonymise(user_id))
        if update is None:
            return None
        key = update["user_id"]
        records = [self.reader.read(c.get("source"), key)
                   for c in update["profile"].get("recent_comments") or []]  # fmt: skip
        return update, build_view(update, records, max_clauses=self.settings.mixed.max_clauses)

    def correct(self, user_id: str, event_id: str, corrected_label: str) -> Correction:
        """Write a correction of the user's comment ``event_id`` to ``labels.v1``. Blocking.

        Raises:
            LookupError: No profile, or no recent comment ``event_id`` (message for people).
            ValueError: The label is not one of the three, or the comment's text is gone.
        """
        update = self.follower.get(self.pseudonymise(user_id))
        if update is None:
            raise LookupError("no profile for this user")
        recent = update["profile"].get("recent_comments") or []
        comment = next((c for c in recent if c["event_id"] == event_id), None)
        if comment is None:
            raise LookupError(f"no recent comment {event_id!r} in this profile")
        record = self.reader.read(comment.get("source"), update["user_id"])  # this one only
        if record.text is None:
            raise ValueError(f"the comment's text is gone ({record.gone}): no retraining row")
        correction = Correction(
            correction_id=uuid.uuid4().hex, user_id=update["user_id"], event_id=event_id,
            source=comment.get("source"), text=record.text, lang=record.lang,
            predicted_label=comment["label"], probabilities=tuple(comment["probabilities"]),
            corrected_label=corrected_label,  # type: ignore[arg-type]  # validated here
            model_version=comment.get("model_version"), corrected_at=corrected_at_now(),
        )  # fmt: skip
        future = self.producer.send(self.settings.topics.labels, key=update["user_id"].encode(),
                                    value=correction.to_json_bytes())  # fmt: skip
        future.get(timeout=10)
        logger.info("correction written event_id=%s label=%s", event_id, corrected_label)
        return correction


def _auth(token: str | None) -> Any:
    @web.middleware
    async def check(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if token is not None and request.path != "/healthz":
            given = request.headers.get("Authorization", "")
            expected = f"Bearer {token}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                return web.json_response({"error": "a bearer token is required"}, status=401,
                                         headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        return await handler(request)

    return check


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def make_app(server: PageServer) -> web.Application:
    """The aiohttp application of ``server`` (see the module docstring for the routes)."""
    token = server.settings.page.token
    app = web.Application(middlewares=[_auth(None if token is None else token.get_secret_value())])

    async def blocking(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    def ready() -> str | None:
        follower = server.follower
        if follower.failed is not None:
            return f"reading {server.settings.topics.profile_updates} failed: {follower.failed}"
        if not follower.caught_up.is_set():
            return (f"still reading {server.settings.topics.profile_updates} "
                    f"({follower.records_read} records so far)")  # fmt: skip
        return None

    async def home(request: web.Request) -> web.Response:
        return _html(render_home())

    async def lookup(request: web.Request) -> web.StreamResponse:
        user_id = request.query.get("id", "").strip()
        if not user_id:
            raise web.HTTPFound("/")
        raise web.HTTPFound(f"/users/{quote(user_id, safe='')}")

    async def page(request: web.Request) -> web.Response:
        user_id = request.match_info["id"]
        if (problem := ready()) is not None:
            return _html(render_message("Not ready yet", problem), 503)
        found = await blocking(server.view, user_id)
        if found is None:
            return _html(render_message("No profile", "No profile for this user: never seen, "
                                        "or erased."), 404)  # fmt: skip
        base = f"/users/{quote(user_id, safe='')}"
        return _html(render_profile(found[1], shown_id=user_id, base=base,
                                    corrected=request.query.get("corrected")))  # fmt: skip

    async def api(request: web.Request) -> web.Response:
        if (problem := ready()) is not None:
            return web.json_response({"error": problem}, status=503)
        found = await blocking(server.view, request.match_info["id"])
        if found is None:
            return web.json_response({"error": "no profile for this user"}, status=404)
        return web.json_response(found[1], dumps=lambda d: json.dumps(d, ensure_ascii=False))

    async def correct(request: web.Request, fields: dict[str, Any]) -> Correction | web.Response:
        if (problem := ready()) is not None:
            return web.json_response({"error": problem}, status=503)
        try:
            return await blocking(server.correct, request.match_info["id"],  # type: ignore[no-any-return]
                                  str(fields.get("event_id", "")),
                                  str(fields.get("corrected_label", "")))  # fmt: skip
        except LookupError as exc:
            return web.json_response({"error": str(exc)}, status=404)
        except ValueError as exc:
            return web.json_response({"error": str(exc).splitlines()[0]}, status=422)

    async def correct_form(request: web.Request) -> web.StreamResponse:
        result = await correct(request, dict(await request.post()))
        if isinstance(result, web.Response):
            message = json.loads(result.text or "{}").get("error", "refused")
            return _html(render_message("Correction not written", message), result.status)
        base = f"/users/{quote(request.match_info['id'], safe='')}"
        raise web.HTTPSeeOther(f"{base}?corrected={quote(result.event_id)}#corrected")

    async def correct_api(request: web.Request) -> web.Response:
        try:
            fields = await request.json()
        except ValueError:
            return web.json_response({"error": "the body must be a JSON object"}, status=400)
        result = await correct(request, fields if isinstance(fields, dict) else {})
        if isinstance(result, web.Response):
            return result
        return web.json_response(json.loads(result.to_json_bytes()), status=201)

    async def health(request: web.Request) -> web.Response:
        problem = ready()
        return web.json_response({"ready": problem is None, "detail": problem},
                                 status=200 if problem is None else 503)  # fmt: skip

    app.add_routes([
        web.get("/", home), web.get("/users", lookup), web.get("/users/{id}", page),
        web.get("/api/users/{id}", api), web.post("/users/{id}/corrections", correct_form),
        web.post("/api/users/{id}/corrections", correct_api), web.get("/healthz", health),
    ])  # fmt: skip
    return app


def serve_page(settings: Settings, announce: Callable[[str], None]) -> None:
    """Serve the page on ``PORTRAIT_PAGE__HOST:PORT`` until Ctrl-C (or SIGTERM), then close.

    Args:
        settings: Portrait's settings; the local copy of the profiles goes to
            ``settings.state_dir / "page"``.
        announce: Called with the page's base URL (``http://host:port``) before serving.

    Raises:
        BrokerUnavailableError: The broker cannot be reached.
        OSError: The port cannot be bound.
    """
    server = PageServer(settings)
    server.start()

    async def application() -> web.Application:
        return make_app(server)

    try:
        announce(f"http://{settings.page.host}:{settings.page.port}")
        web.run_app(application(), host=settings.page.host, port=settings.page.port, print=None)
    finally:
        server.close()
