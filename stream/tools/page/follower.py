"""The latest profile of every user, followed from ``profile-updates.v1`` into a local RocksDB.

Why a follower and not faust's web views over the worker's own table: the worker's table is
split over the workers by partition, and a faust web view must forward each request to the
worker that owns the user (``table_route``), which faust-streaming/faust#514 (open since 2023)
reports failing with three workers. ``profile-updates.v1`` already carries every profile, keyed
by user id and compacted, so one reader of all its partitions answers for every user whichever
worker owns them, adds no load to the workers, and keeps working while they rebalance. The cost:
a copy of the profiles on the page's disk (RocksDB via rocksdict, under
``PORTRAIT_STATE_DIR/page``, rebuilt from the topic at each start) and the topic's lag (the page
says which version it shows).

An erasure's tombstone deletes the user's copy: the page answers 404 for them from then on.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from pathlib import Path
from typing import Any

from stream.tools.follow import assign_all, group_less_consumer

__all__ = ["ProfileFollower"]

logger = logging.getLogger(__name__)

_POLL_MS = 200


class ProfileFollower(threading.Thread):
    """Reads every partition of the profile-update topic, keeps each user's newest update.

    Args:
        client_config: kafka-python client settings
            (:func:`stream.kafka_admin.kafka_client_config`).
        topic: The profile-update topic.
        path: Directory of the local RocksDB copy; emptied at start.

    Attributes:
        caught_up: Set once every partition was read up to its end offset seen at the start.
        failed: The exception that ended the thread, if one did.
    """

    def __init__(self, client_config: dict[str, Any], topic: str, path: Path) -> None:
        super().__init__(name="profile-follower", daemon=True)
        from rocksdict import Rdict

        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True, exist_ok=True)
        self._db = Rdict(str(path))
        self._config = client_config
        self._topic = topic
        self._stopping = threading.Event()
        self.caught_up = threading.Event()
        self.failed: BaseException | None = None
        self.records_read = 0

    def run(self) -> None:
        try:
            self._follow()
        except BaseException as exc:  # reported by the page (503), never silently
            logger.exception("profile follower stopped")
            self.failed = exc

    def _follow(self) -> None:
        consumer = group_less_consumer(self._config)
        try:
            assigned = assign_all(consumer, [self._topic])
            end = consumer.end_offsets(assigned)
            while not self._stopping.is_set():
                batches = consumer.poll(timeout_ms=_POLL_MS)
                for records in batches.values():
                    for record in records:
                        self._apply(record.key, record.value)
                if (
                    not self.caught_up.is_set()
                    and not batches
                    and all(consumer.position(tp) >= end[tp] for tp in assigned)
                ):
                    logger.info("profile follower caught up records=%d", self.records_read)
                    self.caught_up.set()
        finally:
            consumer.close()

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        self.records_read += 1
        if key is None:
            return
        if value is None:  # an erasure
            if key in self._db:
                del self._db[key]
            return
        try:
            version = int(json.loads(value)["version"])
        except (ValueError, KeyError, TypeError):
            logger.warning("profile update that is not one, skipped bytes=%d", len(value))
            return
        held = self._db.get(key)
        if held is None or int(json.loads(held)["version"]) <= version:
            self._db[key] = value

    def get(self, user_id: str) -> dict[str, Any] | None:
        """The newest profile update of ``user_id`` read so far (``profile-updates.v1`` value
        as a dict), or ``None`` (never seen, or erased)."""
        held = self._db.get(user_id.encode("utf-8"))
        return None if held is None else dict(json.loads(held))

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop reading and close the local copy."""
        self._stopping.set()
        self.join(timeout_s)
        self._db.close()
