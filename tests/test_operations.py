"""Operating the daemon: bureaucratctl, timers across restarts, notifications, daemonising."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from tests.brokers import AMQP_URL
from tests.harness import ROOT, Installation

pytestmark = pytest.mark.usefixtures("rabbitmq")


@pytest.fixture
def installation(tmp_path: Path) -> Iterator[Installation]:
    install = Installation(tmp_path, f"sqlite:///{tmp_path / 'ops.db'}")
    try:
        yield install
    finally:
        install.close()


def ctl(install: Installation, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "bureaucrat.ctl", "-c", str(install.config_path), *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=60, env=env, cwd=install.tmp
    )


def test_ctl_launch_list_show_event_terminate(installation: Installation, tmp_path: Path) -> None:
    installation.start_daemon()
    installation.start_worker("inc", "tests.participants:inc")
    definition = tmp_path / "wait.xml"
    definition.write_text(
        '<process name="waiter"><action participant="inc"/><await event="release"/>'
        '<await event="never"/></process>'
    )
    launched = ctl(installation, "launch", str(definition), "-F", "n=41", "-F", "label=hello")
    assert launched.returncode == 0, launched.stderr
    pid = launched.stdout.strip()
    installation.wait_for(lambda: "release" in installation.awaits(pid), what="the first await")

    listing = ctl(installation, "list", "--status", "running")
    assert pid in listing.stdout and "waiter" in listing.stdout

    assert ctl(installation, "event", "release", "--data", '{"x": 1}').returncode == 0
    installation.wait_for(lambda: "never" in installation.awaits(pid), what="the second await")

    shown = ctl(installation, "show", pid, "--json")
    report = json.loads(shown.stdout)
    assert report["status"] == "running"
    assert report["context"] == {"n": 42, "label": "hello", "seen": [42]}
    kinds = [entry["kind"] for entry in report["journal"]]
    assert kinds[:3] == ["launched", "dispatched", "answered"]
    assert "event" in kinds

    assert ctl(installation, "terminate", pid).returncode == 0
    assert installation.wait_finished(pid).status == "terminated"
    text = ctl(installation, "show", pid).stdout
    assert "status   terminated" in text and "journal" in text


def test_ctl_errors_are_clear_with_nonzero_status(
    installation: Installation, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_text("<process>\n  <sequence>\n    <actoin/>\n  </sequence>\n</process>\n")
    result = ctl(installation, "validate", str(bad))
    assert result.returncode == 1
    assert f"{bad}:3: unknown element <actoin>" in result.stderr
    result = ctl(installation, "launch", str(bad))
    assert result.returncode == 1 and ":3:" in result.stderr
    result = ctl(installation, "show", "no-such-process")
    assert result.returncode == 1 and "no process no-such-process" in result.stderr
    result = ctl(installation, "terminate", "no-such-process")
    assert result.returncode == 1 and "no process" in result.stderr
    result = ctl(installation, "event", "x", "--data", "{nope")
    assert result.returncode == 1 and "not valid JSON" in result.stderr
    assert ctl(installation, "frobnicate").returncode == 2


def test_ctl_retry_redispatches_a_failed_action(installation: Installation) -> None:
    installation.start_daemon()
    definition = '<process><action participant="flaky" retries="1" retry-delay="0.2"/></process>'
    with installation.launcher() as launcher:
        pid = launcher.launch(definition)
    # No worker yet: answer 'error' by hand, twice (the attempt and its one retry).
    for _ in range(2):
        installation.wait_for(
            lambda: bool(installation.store.pending_workitems(pid)), what="a workitem"
        )
        (item,) = installation.store.pending_workitems(pid)
        answer = {
            "workitem_id": item.id,
            "target": item.activity,
            "payload": {"status": "error", "error": "busy"},
        }
        installation.publish_raw(installation.config.message_queue, json.dumps(answer).encode())
        installation.wait_for(
            lambda: item not in installation.store.pending_workitems(pid),  # noqa: B023
            what="the answer",
        )
    installation.wait_for(
        lambda: any(e.kind == "failed" for e in installation.store.journal(pid)), what="the failure"
    )
    assert installation.status(pid) == "running"
    installation.start_worker("flaky", "tests.participants:echo")
    assert ctl(installation, "retry", pid).returncode == 0
    assert installation.wait_finished(pid).status == "completed"


def test_timers_fire_on_time_and_after_downtime(installation: Installation) -> None:
    installation.start_daemon()
    with installation.launcher() as launcher:
        began = time.monotonic()
        quick = launcher.launch('<process><delay duration="0.5"/></process>')
        installation.wait_finished(quick)
        elapsed = time.monotonic() - began
        assert 0.5 <= elapsed < 1.5
        later = launcher.launch('<process><delay duration="1"/></process>')
        installation.wait_for(lambda: installation.status(later) == "running", what="the launch")
    assert installation.stop_daemon() == 0
    time.sleep(1.5)  # the timer falls due while the daemon is down
    installation.start_daemon()
    assert installation.wait_finished(later, timeout=10).status == "completed"


def test_finished_processes_are_announced(installation: Installation) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    exchange = installation.config.notifications_exchange
    channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, exchange, routing_key="process.*")
    installation.start_daemon()
    with installation.launcher() as launcher:
        ok = launcher.launch('<process><assign property="x">1</assign></process>')
        bad = launcher.launch('<process><fault code="Nope" message="no"/></process>')
    bodies: dict[str, Any] = {}
    deadline = time.monotonic() + 20
    while len(bodies) < 2 and time.monotonic() < deadline:
        method, _, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            time.sleep(0.05)
            continue
        bodies[method.routing_key] = json.loads(body)
    connection.close()
    assert bodies["process.completed"] == {
        "process_id": ok,
        "status": "completed",
        "context": {"x": 1},
        "fault": None,
    }
    assert bodies["process.faulted"]["process_id"] == bad
    assert bodies["process.faulted"]["fault"] == {"code": "Nope", "message": "no"}


def test_daemonises_with_a_pid_file_and_stops_on_sigterm(installation: Installation) -> None:
    pid_file = installation.tmp / "run" / "bureaucrat.pid"
    pid_file.parent.mkdir()
    pid_file.write_text("999999\n")  # stale: no such process
    command = [
        sys.executable,
        "-m",
        "bureaucrat.cli",
        "-c",
        str(installation.config_path),
        "-p",
        str(pid_file),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = subprocess.run(
        command, capture_output=True, text=True, timeout=30, env=env, cwd=installation.tmp
    )
    assert started.returncode == 0, started.stderr
    installation.wait_for(
        lambda: pid_file.exists() and pid_file.read_text().strip() != "999999", what="the pid file"
    )
    daemon_pid = int(pid_file.read_text())
    again = subprocess.run(
        command, capture_output=True, text=True, timeout=30, env=env, cwd=installation.tmp
    )
    assert again.returncode == 1 and "already running" in again.stderr
    with installation.launcher() as launcher:
        pid = launcher.launch("<process/>")
    assert installation.wait_finished(pid).status == "completed"
    os.kill(daemon_pid, signal.SIGTERM)
    installation.wait_for(lambda: not pid_file.exists(), what="the daemon to exit")


def test_refuses_an_older_schema_and_names_the_upgrade(installation: Installation) -> None:
    import sqlite3

    database = installation.tmp / "old.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE instances (id TEXT PRIMARY KEY)")
    config = installation.tmp / "old.conf"
    config.write_text(f"[bureaucrat]\ndatabase_url = sqlite:///{database}\n")
    command = [sys.executable, "-m", "bureaucrat.cli", "-f", "-c", str(config)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 1
    assert "bureaucratctl db upgrade" in result.stderr
