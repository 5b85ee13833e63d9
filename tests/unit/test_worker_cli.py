"""``portrait worker`` refuses to start with one clear message and exit code 2 (no broker)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import onnxruntime as ort
import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from stream.settings import Settings
from stream.tools.cli import app
from stream.worker import lock_state_dir

# nothing listens here: every case below must fail before the worker contacts a broker
UNUSED_BROKER = "127.0.0.1:9"


def invoke(env: dict[str, str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["worker"], env=env)
    return result.exit_code, result.output


def test_worker_without_bootstrap_servers_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PORTRAIT_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    code, output = invoke({"PORTRAIT_KAFKA__BOOTSTRAP_SERVERS": ""})
    assert code == 2
    assert "PORTRAIT_KAFKA__BOOTSTRAP_SERVERS" in output


def test_worker_with_a_bad_setting_exits_2() -> None:
    code, output = invoke({"PORTRAIT_BATCH__MAX_WAIT_S": "-1"})
    assert code == 2
    assert "PORTRAIT_BATCH__MAX_WAIT_S: must be > 0 (got -1)" in output


def test_worker_with_a_missing_model_exits_2(tmp_path: Path) -> None:
    code, output = invoke({"PORTRAIT_KAFKA__BOOTSTRAP_SERVERS": UNUSED_BROKER,
                           "PORTRAIT_MODEL__PATH": str(tmp_path / "no-model")})  # fmt: skip
    assert code == 2
    assert "portrait export" in output


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is available here"
)
def test_worker_asked_for_unavailable_cuda_exits_2(tiny_model_dir: Path) -> None:
    code, output = invoke({"PORTRAIT_KAFKA__BOOTSTRAP_SERVERS": UNUSED_BROKER,
                           "PORTRAIT_MODEL__PATH": str(tiny_model_dir),
                           "PORTRAIT_MODEL__DEVICE": "cuda"})  # fmt: skip
    assert code == 2
    assert "PORTRAIT_MODEL__DEVICE=cpu" in output


def test_worker_help_lists_every_setting_with_its_env_name() -> None:
    result = CliRunner().invoke(app, ["worker", "--help"], terminal_width=200)
    assert result.exit_code == 0
    names = ["PORTRAIT_APP_ID", "PORTRAIT_KAFKA__BOOTSTRAP_SERVERS",
             "PORTRAIT_KAFKA__SASL_PASSWORD", "PORTRAIT_BATCH__MAX_WAIT_S",
             "PORTRAIT_MODEL__DEVICE", "PORTRAIT_METRICS_PORT"]  # fmt: skip
    for name in names:
        assert name in result.output
    settings = Settings()
    leaves = 0
    for name in Settings.model_fields:
        section = getattr(settings, name)
        leaves += len(type(section).model_fields) if isinstance(section, BaseModel) else 1
    assert result.output.count("PORTRAIT_") >= leaves


def _worker_process(env: dict[str, str], timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """``portrait worker`` in its own process (a file lock is per process), nothing listening at
    the broker address: a refusal must come before any broker contact."""
    full = {**os.environ, "PORTRAIT_KAFKA__BOOTSTRAP_SERVERS": UNUSED_BROKER, **env}
    return subprocess.run(
        [sys.executable, "-c", "from stream.tools.cli import main; main()", "worker"],
        env=full, capture_output=True, text=True, timeout=timeout_s,
    )  # fmt: skip


def test_second_worker_on_a_state_dir_in_use_exits_2_at_once(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    state = tmp_path / "state"
    held = lock_state_dir(state)  # this test process plays the running worker
    try:
        done = _worker_process({"PORTRAIT_STATE_DIR": str(state),
                                "PORTRAIT_MODEL__PATH": str(tiny_model_dir),
                                "PORTRAIT_METRICS_PORT": "0"})  # fmt: skip
    finally:
        held.release()
    assert done.returncode == 2, done.stderr[-2000:]
    assert (
        f"PORTRAIT_STATE_DIR={state} is in use by another worker process (pid {os.getpid()})"
        in done.stderr
    )
    assert "Traceback" not in done.stderr


def test_busy_metrics_port_exits_2_before_the_broker(tmp_path: Path, tiny_model_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _worker_process({"PORTRAIT_STATE_DIR": str(tmp_path / "state"),
                                "PORTRAIT_MODEL__PATH": str(tiny_model_dir),
                                "PORTRAIT_METRICS_PORT": str(port)})  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"PORTRAIT_METRICS_PORT={port} cannot be bound" in done.stderr
    assert "Traceback" not in done.stderr and "broker not reachable" not in done.stderr


def test_worker_help_names_the_committed_model_as_the_default_model_path() -> None:
    result = CliRunner().invoke(app, ["worker", "--help"], terminal_width=200)
    assert "PORTRAIT_MODEL__PATH (default: the committed model," in result.output
    assert "PORTRAIT_MODEL__PATH (default: none)" not in result.output


def test_version_names_the_package_and_the_model_it_would_load() -> None:
    from models.contract.manifest import DEFAULT_MODEL_DIR, read_manifest

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("portrait 0.1.0, model ")
    assert read_manifest(DEFAULT_MODEL_DIR)["model_version"] in result.output


@pytest.mark.parametrize("command", [["replay", "/dev/null"], ["forget", "someone"], ["profiles"]])
def test_kafka_commands_without_bootstrap_servers_exit_2_like_the_worker(
    command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PORTRAIT_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    result = CliRunner().invoke(app, command, env={"PORTRAIT_KAFKA__BOOTSTRAP_SERVERS": ""})
    assert result.exit_code == 2, result.output
    assert "PORTRAIT_KAFKA__BOOTSTRAP_SERVERS: Portrait needs the Kafka bootstrap servers" in (
        result.output
    )


@pytest.mark.parametrize(
    "command",
    [["train"], ["pretrain"], ["export"], ["evaluate"], ["base", "e5-small"], ["route", "a", "b"]],
)
def test_model_commands_without_the_train_extra_name_the_install_command(
    command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    assert "needs the train extra (torch not installed)" in result.output
    assert "pip install torch==2.13.0 -e '.[train]'" in result.output


def test_evaluate_commands_with_a_missing_model_exit_2_without_a_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "none")])
    assert result.exit_code == 2 and "holds neither manifest.json" in result.output
    result = CliRunner().invoke(app, ["evaluate-mixed", str(tmp_path / "none")])
    assert result.exit_code == 2 and "does not exist; run `portrait export`" in result.output


def test_replay_dry_run_validates_without_a_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PORTRAIT_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"event_id": "e1", "user_id": "u1", "text": "great",'
        ' "event_time": "2026-11-29T18:04:05Z"}\n'
        "not json\n"
        '{"event_id": "e3", "user_id": "u3", "text": "x"}\n'
    )
    env = {"PORTRAIT_KAFKA__BOOTSTRAP_SERVERS": ""}
    result = CliRunner().invoke(app, ["replay", str(events), "--dry-run"], env=env)
    assert result.exit_code == 0, result.output
    assert "invalid line 2: not_json" in result.output
    assert "invalid line 3: invalid_field: event_time" in result.output
    assert (
        "dry run: 1 valid events (comments.v1: 1); invalid rows: 2; nothing sent" in result.output
    )
    strict = CliRunner().invoke(app, ["replay", str(events), "--dry-run", "--strict"], env=env)
    assert strict.exit_code == 1


def test_json_log_format_writes_one_json_object_per_line(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    done = _worker_process({"PORTRAIT_LOG_FORMAT": "json", "PORTRAIT_METRICS_PORT": "0",
                            "PORTRAIT_STATE_DIR": str(tmp_path / "state"),
                            "PORTRAIT_MODEL__PATH": str(tmp_path / "no-model")})  # fmt: skip
    assert done.returncode == 2  # the model is missing: it logs, then stops
    records = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert records, done.stderr[-2000:]
    assert {"asctime", "process", "levelname", "name", "message"} <= set(records[0])


def test_shell_completion_is_offered() -> None:
    result = CliRunner().invoke(app, ["--help"], terminal_width=200)
    assert "--install-completion" in result.output and "--show-completion" in result.output


def test_replay_dry_run_applies_the_workers_clock_check_and_reads_csv_epoch_ms(
    tmp_path: Path,
) -> None:
    now_ms = int(time.time() * 1000)
    events = tmp_path / "events.csv"
    events.write_text(
        "event_id,user_id,text,event_time\n"
        f"e1,u1,great,{now_ms}\n"  # epoch ms in a CSV cell
        f"e2,u2,great,{now_ms // 1000}\n"  # epoch *seconds*: 1970, far before the clock
        "e3,u3,great,2999-12-31T23:59:59Z\n"
    )
    env = {"PORTRAIT_KAFKA__BOOTSTRAP_SERVERS": ""}
    result = CliRunner().invoke(app, ["replay", str(events), "--dry-run"], env=env)
    assert result.exit_code == 0, result.output
    assert "invalid line 3: event_time_out_of_range" in result.output
    assert "invalid line 4: event_time_out_of_range" in result.output
    assert "more than 24 hours after the worker's clock" in result.output
    assert "dry run: 1 valid events" in result.output


def test_broker_command_runs_a_local_broker_until_ctrl_c() -> None:
    import signal
    import socket
    import subprocess
    import sys

    from stream.tools.worker_process import free_port

    port = free_port()
    command = [sys.executable, "-c", "from stream.tools.cli import main; main()", "broker",
               "--port", str(port)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert f"127.0.0.1:{port}" in first and "Ctrl-C" in first, first
        assert process.stdout.readline().strip() == (
            f"export PORTRAIT_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:{port}"
        )
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0 and "broker stopped" in out
