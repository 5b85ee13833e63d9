"""``portrait worker`` as a child process: started with given settings, watched, stopped.

Used by ``portrait demo`` and by tests that crash, restart or pause a worker. The child gets its
settings as ``PORTRAIT_...`` environment variables built from a :class:`~stream.settings.Settings`
object (:func:`settings_env`; no other ``PORTRAIT_...`` variable is inherited), runs in its own
session (a Ctrl-C in the terminal reaches only the parent, which stops it in order), logs to a file,
and on Linux is terminated if the parent dies.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from models.contract.errors import PortraitError
from stream.settings import Settings, env_name
from stream.tools.broker import terminate_with_parent

__all__ = ["WorkerProcess", "WorkerProcessError", "free_port", "is_ready", "settings_env"]

logger = logging.getLogger(__name__)


def is_ready(port: int, timeout_s: float = 1.0) -> bool:
    """Whether the worker on local ``port`` answers ``/readyz`` with 200."""
    if port <= 0:
        return False
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=timeout_s) as rsp:
            return bool(rsp.status == 200)
    except (urllib.error.URLError, OSError):  # 503 (HTTPError), refused, timed out
        return False


WORKER_COMMAND = (sys.executable, "-c", "from stream.tools.cli import main; main()", "worker")
"""How the worker is started: this interpreter running ``portrait worker``."""


class WorkerProcessError(PortraitError):
    """The worker process exited, or did not come up in time; the message carries its log's end."""


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as ``PORTRAIT_...`` environment variables (secrets included; None left out).

    Args:
        settings: the settings to pass to a child process.

    Returns:
        Variable name -> value, e.g. ``{"PORTRAIT_BATCH__MAX_WAIT_S": "0.02", ...}``.
    """
    env: dict[str, str] = {}

    def walk(value: Any, loc: tuple[str, ...]) -> None:
        if isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name), (*loc, name))
        elif value is not None:
            raw = value.get_secret_value() if hasattr(value, "get_secret_value") else value
            env[env_name(loc)] = str(raw).lower() if isinstance(raw, bool) else str(raw)

    walk(settings, ())
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class WorkerProcess:
    """``portrait worker`` as a subprocess in its own session, logging to a file.

    Args:
        settings: the worker's settings (passed as environment variables, nothing else inherited
            from ``PORTRAIT_...``).
        log_path: file for the worker's stdout and stderr.
        command: the program to run; default :data:`WORKER_COMMAND` (``portrait worker``).
            ``portrait bench`` passes its stored-predictions worker here.
    """

    def __init__(
        self, settings: Settings, log_path: Path, command: Sequence[str] = WORKER_COMMAND
    ) -> None:
        self.settings = settings
        self.log_path = log_path
        self.command = tuple(command)
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the worker (returns at once; see :meth:`wait_ready`)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PORTRAIT_")}
        env.update(settings_env(self.settings))
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, env=env,
                                             start_new_session=True,
                                             preexec_fn=terminate_with_parent)  # fmt: skip
        logger.info("worker started pid=%s log=%s", self._process.pid, self.log_path)

    @property
    def pid(self) -> int | None:
        """The worker's process id (None before start and after stop)."""
        return None if self._process is None else self._process.pid

    @property
    def exit_code(self) -> int | None:
        """The exit code once the worker has exited, else None."""
        return None if self._process is None else self._process.poll()

    def check_alive(self) -> None:
        """Raises WorkerProcessError (with the end of the worker's log) if the worker has exited."""
        code = self.exit_code
        if self._process is not None and code is not None:
            raise WorkerProcessError(
                f"the worker exited with code {code}; log {self.log_path}:\n{self.log_tail()}"
            )

    def wait_ready(self, timeout_s: float) -> None:
        """Wait until the worker consumes: its ``/readyz`` answers 200 (partitions assigned, table
        recovered; :mod:`stream.health`).

        Raises:
            WorkerProcessError: the worker exited, or was not ready within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            if is_ready(self.settings.metrics_port):
                return
            time.sleep(0.25)
        raise WorkerProcessError(f"the worker did not start within {timeout_s:.0f} s; "
                        f"log {self.log_path}:\n{self.log_tail()}")  # fmt: skip

    def log_tail(self, max_bytes: int = 3000) -> str:
        """The end of the worker's log."""
        if not self.log_path.exists():
            return ""
        data = self.log_path.read_bytes()
        return data[-max_bytes:].decode("utf-8", "replace")

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the worker's process group, SIGKILL after ``timeout_s``; wait for the exit."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            logger.warning("worker did not stop on SIGTERM, killing pid=%s", process.pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout_s)
