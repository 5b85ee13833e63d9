"""``portrait demo`` end to end on a small population: nothing lost, nothing counted twice.

Runs the real ``portrait worker`` subprocess with the tiny random test model, so fidelity figures
are meaningless here; what is asserted is the accounting, the dead-letter reasons, the written
profiles, and that the demo stops the processes it started.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

from stream.settings import load_settings
from stream.tools.demo import DemoOptions, run_demo

CLI = "from stream.tools.cli import main; main()"

USERS = 20


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _port_closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_demo_on_existing_broker_accounts_for_every_event(
    broker, tiny_model_dir: Path, tmp_path: Path
) -> None:
    settings = load_settings(
        kafka={"bootstrap_servers": broker.bootstrap_servers}, model={"path": tiny_model_dir}
    )
    lines: list[str] = []
    out = tmp_path / "profiles.jsonl"

    result = run_demo(
        settings, DemoOptions(users=USERS, seed=5, out=out, timeout_s=240, progress=False),
        echo=lines.append,
    )  # fmt: skip

    assert result.accounted, lines
    assert result.produced == result.profiled + result.dead_lettered
    assert result.worker_consumed == result.produced
    assert result.dead_by_reason == {"not_json": 1, "empty_value": 1, "not_an_object": 1,
                                     "invalid_field": 2}  # fmt: skip
    assert result.profiled == len(result.population.events)
    profiles = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(profiles) == USERS
    for update in profiles:  # every applied event bumps the version by one
        profile = update["profile"]
        applied = profile["comment_count"] + sum(profile["behavior_counts"].values())
        assert update["version"] == applied
        assert profile["comment_count"] == result.population.comment_counts[update["user_id"]]
    assert result.fidelity.users > 0
    assert set(result.latency_s) == {50, 95, 99}
    # the demo's segments: per user and segment, transitions alternate entered/exited, and the
    # final profile's memberships are the segments whose last transition was an entry
    history: dict[tuple[str, str], list[str]] = {}
    for event in sorted(result.segment_events, key=lambda e: e["version"]):
        history.setdefault((event["user_id"], event["segment"]), []).append(event["transition"])
        if event["segment"] == "big-spender":
            assert event["values"]["purchase_value_sum"] > 300.0
    for transitions in history.values():
        assert transitions == ["entered", "exited"] * (len(transitions) // 2) + (
            ["entered"] if len(transitions) % 2 else []
        )
    for update in profiles:
        members = {seg for (user, seg), t in history.items() if user == update["user_id"]
                   and t[-1] == "entered"}  # fmt: skip
        assert set(update["profile"]["segments"]) == members, update["user_id"]
    [worker_pid] = [int(m) for line in lines for m in re.findall(r"pid=(\d+)", line)]
    assert _gone(worker_pid)
    assert any("run-scoped topics" in line for line in lines)


def test_demo_command_starts_and_stops_its_own_broker(tiny_model_dir: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTRAIT_")}
    env["PORTRAIT_MODEL__PATH"] = str(tiny_model_dir)
    out = tmp_path / "profiles.jsonl"
    command = [sys.executable, "-c", CLI, "demo", "--users", "10",
               "--no-progress", "--out", str(out), "--timeout-s", "240"]  # fmt: skip

    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Texts are REAL" in done.stdout and "SIMULATED" in done.stdout
    assert "PROFILE FIDELITY" in done.stdout and "SEGMENTS (segment-events.v1)" in done.stdout
    assert "all accounted for" in done.stdout
    assert len(out.read_text().splitlines()) == 10
    [port] = re.findall(r"embedded Tansu at 127\.0\.0\.1:(\d+)", done.stderr)
    [worker_pid] = re.findall(r"worker: started pid=(\d+)", done.stderr)
    assert _port_closed(int(port))
    assert _gone(int(worker_pid))


def test_demo_rejects_zero_users() -> None:
    command = [sys.executable, "-c", CLI, "demo", "--users", "0"]

    done = subprocess.run(command, capture_output=True, text=True, timeout=60)

    assert done.returncode == 2


def test_demo_terminated_midway_stops_its_worker_and_broker(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTRAIT_")}
    env["PORTRAIT_MODEL__PATH"] = str(tiny_model_dir)
    command = [sys.executable, "-c", CLI, "demo", "--users", "10",
               "--no-progress", "--out", str(tmp_path / "p.jsonl")]  # fmt: skip
    demo = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True)  # fmt: skip
    seen = ""
    assert demo.stderr is not None
    for line in demo.stderr:
        seen += line
        if "worker: started pid=" in line:
            break
    demo.send_signal(signal.SIGTERM)
    _, rest = demo.communicate(timeout=60)
    seen += rest

    assert demo.returncode == 130, seen
    assert "interrupted" in seen
    [port] = re.findall(r"embedded Tansu at 127\.0\.0\.1:(\d+)", seen)
    [worker_pid] = re.findall(r"worker: started pid=(\d+)", seen)
    assert _port_closed(int(port))
    assert _gone(int(worker_pid))
