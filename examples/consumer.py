"""Keep the latest Portrait profile per user from ``profile-updates.v1`` (needs kafka-python only).

    pip install kafka-python
    python examples/consumer.py --bootstrap-servers localhost:9092 --group-id my-team

Each record on ``profile-updates.v1`` is keyed by the user id (UTF-8) and carries the user's whole
current profile (schemas/profile-updates.v1.json). Delivery is at least once, so:

- keep an update only if its ``version`` is higher than the one you hold for that user (each
  applied event raises it by one; a redelivered update carries the same version again);
- a record whose value is null (a tombstone) means the user's profile was erased: delete it, and
  forget its version (a later profile for that user starts again).

The topic is compacted, so a new consumer group that starts from the earliest offset rebuilds the
whole view. This file keeps the view in a dict; write it to your own store the same way.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from kafka import KafkaConsumer

UPDATED, STALE, DELETED = "updated", "stale", "deleted"


class LatestProfiles:
    """The latest profile update per user id, by ``version``."""

    def __init__(self) -> None:
        self.by_user: dict[str, dict[str, Any]] = {}

    def apply(self, key: bytes | None, value: bytes | None) -> str:
        """Fold one record in; returns ``"updated"``, ``"stale"`` or ``"deleted"``.

        Raises:
            ValueError: The record has no key, or its value is not a JSON object with a
                ``version``.
        """
        if key is None:
            raise ValueError("profile-update records are keyed by user id; this one has no key")
        user_id = key.decode("utf-8")
        if value is None:  # tombstone: the profile was erased
            self.by_user.pop(user_id, None)
            return DELETED
        update = json.loads(value)
        if not isinstance(update, dict) or not isinstance(update.get("version"), int):
            raise ValueError(f"not a profile update (no integer version) for key {user_id!r}")
        held = self.by_user.get(user_id)
        if held is not None and update["version"] <= held["version"]:
            return STALE  # a redelivery, or older than what we hold
        self.by_user[user_id] = update
        return UPDATED


def make_consumer(
    bootstrap_servers: str, topic: str, group_id: str, **options: Any
) -> KafkaConsumer:
    """A consumer group member that starts from the earliest offset when the group is new."""
    return KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers.split(","),
        group_id=group_id,
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        **options,
    )


def run(
    consumer: KafkaConsumer,
    view: LatestProfiles,
    *,
    idle_timeout_s: float | None = None,
    on_record: Callable[[Any, str], None] | None = None,
) -> None:
    """Poll and fold records into ``view`` until nothing arrived for ``idle_timeout_s``.

    Args:
        consumer: A subscribed consumer.
        view: Where the latest profiles go.
        idle_timeout_s: Return after this many seconds without a record once partitions are
            assigned (joining the group does not count); ``None`` = never.
        on_record: Called with each record and the decision, e.g. to log or to store.
    """
    last_record = time.monotonic()
    while idle_timeout_s is None or time.monotonic() - last_record < idle_timeout_s:
        batches = consumer.poll(timeout_ms=500)
        if not consumer.assignment():
            last_record = time.monotonic()
        for records in batches.values():
            for record in records:
                decision = view.apply(record.key, record.value)
                if on_record is not None:
                    on_record(record, decision)
                last_record = time.monotonic()


def _option(item: str) -> tuple[str, Any]:
    """``"session_timeout_ms=6000"`` -> ``("session_timeout_ms", 6000)`` (digits become ints)."""
    key, sep, value = item.partition("=")
    if not sep:
        raise ValueError(f"--config wants KEY=VALUE, got {item!r}")
    return key, int(value) if value.isdigit() else value


def main(argv: Sequence[str] | None = None) -> int:
    """Follow the topic and print one JSON line per kept update or deletion."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers", default="localhost:9092")
    parser.add_argument("--topic", default="profile-updates.v1")
    parser.add_argument("--group-id", default="portrait-profiles-example")
    parser.add_argument(
        "--idle-timeout-s", type=float, default=None,
        help="exit after this many seconds without a record (default: never)",
    )  # fmt: skip
    parser.add_argument(
        "--config", action="append", default=[], metavar="KEY=VALUE",
        help="a KafkaConsumer option, e.g. security_protocol=SASL_SSL (repeatable)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        options = dict(_option(item) for item in args.config)
    except ValueError as exc:
        parser.error(str(exc))

    def show(record: Any, decision: str) -> None:
        if decision != STALE:
            user_id = record.key.decode("utf-8")
            version = None if record.value is None else json.loads(record.value)["version"]
            print(json.dumps({"user_id": user_id, "decision": decision, "version": version}))

    view = LatestProfiles()
    consumer = make_consumer(args.bootstrap_servers, args.topic, args.group_id, **options)
    try:
        run(consumer, view, idle_timeout_s=args.idle_timeout_s, on_record=show)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    print(json.dumps({"users": len(view.by_user)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
