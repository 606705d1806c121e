"""Operating the daemon: bureaucratctl, timers across restarts, notifications, daemonising."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pika
import pytest

from bureaucrat.store import TimerRecord
from tests.brokers import AMQP_URL
from tests.harness import ROOT, TERMINAL, Installation

pytestmark = pytest.mark.usefixtures("rabbitmq")


def ctl(install: Installation, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "bureaucrat.ctl", "-c", str(install.config_path), *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=60, env=env, cwd=install.tmp
    )


def test_ctl_launch_list_show_event_terminate(
    sqlite_installation: Installation, tmp_path: Path
) -> None:
    sqlite_installation.start_daemon()
    sqlite_installation.start_worker("inc", "tests.participants:inc")
    definition = tmp_path / "wait.xml"
    definition.write_text(
        '<process name="waiter"><action participant="inc"/><await event="release"/>'
        '<await event="never"/></process>'
    )
    launched = ctl(
        sqlite_installation, "launch", str(definition), "-F", "n=41", "-F", "label=hello"
    )
    assert launched.returncode == 0, launched.stderr
    pid = launched.stdout.strip()
    sqlite_installation.wait_for(
        lambda: "release" in sqlite_installation.awaits(pid), what="the first await"
    )

    listing = ctl(sqlite_installation, "list", "--status", "running")
    assert pid in listing.stdout and "waiter" in listing.stdout
    tomorrow = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))
    assert pid not in ctl(sqlite_installation, "list", "--since", tomorrow).stdout
    assert pid in ctl(sqlite_installation, "list", "--until", tomorrow).stdout
    bad = ctl(sqlite_installation, "list", "--since", "last tuesday")
    assert bad.returncode == 2 and "not an ISO 8601 time" in bad.stderr

    assert ctl(sqlite_installation, "event", "release", "--data", '{"x": 1}').returncode == 0
    sqlite_installation.wait_for(
        lambda: "never" in sqlite_installation.awaits(pid), what="the second await"
    )

    shown = ctl(sqlite_installation, "show", pid, "--json")
    report = json.loads(shown.stdout)
    assert report["status"] == "running"
    assert report["context"] == {"n": 42, "label": "hello", "seen": [42]}
    kinds = [entry["kind"] for entry in report["journal"]]
    assert kinds[:3] == ["launched", "dispatched", "answered"]
    assert "event" in kinds

    assert ctl(sqlite_installation, "terminate", pid).returncode == 0
    assert sqlite_installation.wait_finished(pid).status == "terminated"
    text = ctl(sqlite_installation, "show", pid).stdout
    assert "status   terminated" in text and "journal" in text


def test_ctl_errors_are_clear_with_nonzero_status(
    sqlite_installation: Installation, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_text("<process>\n  <sequence>\n    <actoin/>\n  </sequence>\n</process>\n")
    result = ctl(sqlite_installation, "validate", str(bad))
    assert result.returncode == 1
    assert f"{bad}:3: unknown element <actoin>" in result.stderr
    result = ctl(sqlite_installation, "launch", str(bad))
    assert result.returncode == 1 and ":3:" in result.stderr
    result = ctl(sqlite_installation, "show", "no-such-process")
    assert result.returncode == 1 and "no process no-such-process" in result.stderr
    result = ctl(sqlite_installation, "terminate", "no-such-process")
    assert result.returncode == 1 and "no process" in result.stderr
    result = ctl(sqlite_installation, "event", "x", "--data", "{nope")
    assert result.returncode == 1 and "not valid JSON" in result.stderr
    assert ctl(sqlite_installation, "frobnicate").returncode == 2


def test_ctl_retry_redispatches_a_failed_action(sqlite_installation: Installation) -> None:
    sqlite_installation.start_daemon()
    definition = '<process><action participant="flaky" retries="1" retry-delay="0.2"/></process>'
    with sqlite_installation.launcher() as launcher:
        pid = launcher.launch(definition)
    # No worker yet: answer 'error' by hand, twice (the attempt and its one retry).
    for _ in range(2):
        sqlite_installation.wait_for(
            lambda: bool(sqlite_installation.store.pending_workitems(pid)), what="a workitem"
        )
        (item,) = sqlite_installation.store.pending_workitems(pid)
        answer = {
            "workitem_id": item.id,
            "target": item.activity,
            "payload": {"status": "error", "error": "busy"},
        }
        sqlite_installation.publish_raw(
            sqlite_installation.config.message_queue, json.dumps(answer).encode()
        )
        sqlite_installation.wait_for(
            lambda: item not in sqlite_installation.store.pending_workitems(pid),  # noqa: B023
            what="the answer",
        )
    sqlite_installation.wait_for(
        lambda: any(e.kind == "failed" for e in sqlite_installation.store.journal(pid)),
        what="the failure",
    )
    assert sqlite_installation.status(pid) == "running"
    sqlite_installation.start_worker("flaky", "tests.participants:echo")
    assert ctl(sqlite_installation, "retry", pid).returncode == 0
    assert sqlite_installation.wait_finished(pid).status == "completed"


def timer_of(install: Installation, process_id: str) -> TimerRecord | None:
    """The timer of a process, as the store holds it; None once it has fired."""

    def timer_ids() -> list[str]:
        record = install.store.instance(process_id)
        return [] if record is None or record.state is None else list(record.state["timers"])

    install.wait_for(
        lambda: bool(timer_ids()) or install.status(process_id) in TERMINAL,
        what=f"the timer of {process_id}",
    )
    ids = timer_ids()
    if not ids:
        return None
    with install.store.transaction() as tx:
        return tx.timer(ids[0])


def journal_time(install: Installation, process_id: str, kind: str) -> float:
    (at,) = [entry.at for entry in install.store.journal(process_id) if entry.kind == kind]
    return at


def test_timers_fire_after_their_due_time_and_after_downtime(
    sqlite_installation: Installation,
) -> None:
    """A delay's timer is due its duration after the launch's step; it fires at or after that
    time, never before, also when it fell due while no daemon ran. (Timer latency is for a
    benchmark; the deadlines here only say that a timer is not left for a minute.)"""
    install = sqlite_installation
    install.start_daemon()
    with install.launcher() as launcher:
        quick = launcher.launch('<process><delay duration="1"/></process>')
        timer = timer_of(install, quick)
        due = journal_time(install, quick, "launched") + 1
        if timer is not None:  # None: it fired before this test could read it
            assert timer.due == pytest.approx(due)
        assert install.wait_finished(quick, timeout=20).status == "completed"
        assert journal_time(install, quick, "timer") >= due
        later = launcher.launch('<process><delay duration="2"/></process>')
        timer = timer_of(install, later)
    assert install.stop_daemon() == 0
    assert timer is not None and install.status(later) == "running", "it fired before the stop"
    deadline = time.monotonic() + 30
    while time.time() <= timer.due:  # the timer falls due while the daemon is down
        assert time.monotonic() < deadline, "the clock did not pass the timer's due time"
        time.sleep(0.05)
    with install.store.transaction() as tx:
        assert tx.timer(timer.id) == timer  # due, and not fired without a daemon
    install.start_daemon()
    assert install.wait_finished(later, timeout=20).status == "completed"
    assert journal_time(install, later, "timer") >= timer.due


def test_finished_processes_are_announced(sqlite_installation: Installation) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    exchange = sqlite_installation.config.notifications_exchange
    channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, exchange, routing_key="process.*")
    sqlite_installation.start_daemon()
    with sqlite_installation.launcher() as launcher:
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


def read_pid(path: Path) -> int | None:
    """The pid in a pid file; None while there is none (no file yet, or not yet written)."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def test_daemonises_with_a_pid_file_and_stops_on_sigterm(sqlite_installation: Installation) -> None:
    pid_file = sqlite_installation.tmp / "run" / "bureaucrat.pid"
    pid_file.parent.mkdir()
    pid_file.write_text("999999\n")  # stale: no such process
    command = [
        sys.executable,
        "-m",
        "bureaucrat.cli",
        "-c",
        str(sqlite_installation.config_path),
        "-p",
        str(pid_file),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = subprocess.run(
        command, capture_output=True, text=True, timeout=30, env=env, cwd=sqlite_installation.tmp
    )
    assert started.returncode == 0, started.stderr
    sqlite_installation.wait_for(
        lambda: read_pid(pid_file) not in (None, 999999), what="the daemon's pid in the pid file"
    )
    daemon_pid = read_pid(pid_file)
    assert daemon_pid is not None
    again = subprocess.run(
        command, capture_output=True, text=True, timeout=30, env=env, cwd=sqlite_installation.tmp
    )
    assert again.returncode == 1
    assert f"already running: pid {daemon_pid} holds the pid file {pid_file}" in again.stderr
    with sqlite_installation.launcher() as launcher:
        pid = launcher.launch("<process/>")
    assert sqlite_installation.wait_finished(pid).status == "completed"
    os.kill(daemon_pid, signal.SIGTERM)
    sqlite_installation.wait_for(lambda: not pid_file.exists(), what="the daemon to exit")


def test_refuses_an_older_schema_and_names_the_upgrade(sqlite_installation: Installation) -> None:
    import sqlite3

    database = sqlite_installation.tmp / "old.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE instances (id TEXT PRIMARY KEY)")
    config = sqlite_installation.tmp / "old.conf"
    config.write_text(f"[bureaucrat]\ndatabase_url = sqlite:///{database}\n")
    command = [sys.executable, "-m", "bureaucrat.cli", "-f", "-c", str(config)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 1
    assert "bureaucratctl db upgrade" in result.stderr


def test_health_says_whether_the_daemon_serves(sqlite_installation: Installation) -> None:
    before = ctl(sqlite_installation, "health")
    assert before.returncode == 1
    assert f"queue {sqlite_installation.config.launch_queue} has no consumer" in before.stderr
    sqlite_installation.start_daemon()
    sqlite_installation.wait_for(
        lambda: ctl(sqlite_installation, "health").returncode == 0, what="a healthy daemon"
    )
    missing = ctl(sqlite_installation, "health", "--no-database", "no-such-queue")
    assert missing.returncode == 1 and "no-such-queue does not exist" in missing.stderr


def test_the_daemon_prunes_message_ids_older_than_the_dedupe_window(
    sqlite_installation: Installation,
) -> None:
    store = sqlite_installation.store
    with store.transaction() as tx:
        tx.mark_processed("ancient", time.time() - 8 * 24 * 3600)  # beyond the default week
        tx.mark_processed("recent", time.time() - 3600)

    def known(message_id: str) -> bool:
        with store.transaction() as tx:
            return tx.processed(message_id)

    sqlite_installation.start_daemon()
    sqlite_installation.wait_for(lambda: not known("ancient"), what="the pruning")
    assert known("recent")
