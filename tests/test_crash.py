"""Crashes lose nothing and repeat nothing: the daemon is killed with SIGKILL at random moments
while 200 processes of 5 actions run; every process still completes with the right context and
no workitem is left pending."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from bureaucrat.amqp import Broker
from tests.brokers import AMQP_URL, in_ci
from tests.harness import Installation

pytestmark = [pytest.mark.usefixtures("rabbitmq"), pytest.mark.slow]

PROCESSES = 200
FIVE = (
    "<process>"
    + "".join(
        f'<assign property="step">{i}</assign><action participant="inc"/>' for i in range(1, 6)
    )
    + "</process>"
)


def test_sigkill_at_random_moments_loses_and_repeats_nothing(installation: Installation) -> None:
    rng = random.Random(20261122)
    installation.start_daemon()
    for _ in range(2):
        # Slow enough that the work outlasts five kills and restarts on a loaded machine.
        installation.start_worker("inc", "tests.participants:inc", {"INC_DELAY": "0.02"})
    with installation.launcher() as launcher:
        pids = [launcher.launch(FIVE, {"n": 0}, process_id=f"crash-{i}") for i in range(PROCESSES)]
    unfinished_at_kill: list[int] = []
    answered = 0
    while len(unfinished_at_kill) < 5 and _completed(installation) < PROCESSES:
        # Once the restarted daemon is at work again, kill it at a random moment.
        installation.wait_for(_progress(installation, answered), timeout=60, what="work")
        time.sleep(rng.uniform(0.0, 0.6))
        installation.kill_daemon()
        answered = _answered(installation)
        unfinished_at_kill.append(PROCESSES - _completed(installation))
        installation.start_daemon()
    for pid in pids:
        record = installation.wait_finished(pid, timeout=120)
        assert record.status == "completed", pid
        context = record.state["scopes"][""]
        assert context["n"] == 5, (pid, context)
        assert context["seen"] == [1, 2, 3, 4, 5], (pid, context)
        assert installation.store.pending_workitems(pid) == []
        kinds = [entry.kind for entry in installation.store.journal(pid)]
        # No step was applied twice (a workitem sent again after a crash is answered again,
        # and that answer is ignored).
        assert kinds.count("dispatched") == kinds.count("answered") == 5, (pid, kinds)
        assert kinds.count("launched") == kinds.count("completed") == 1, (pid, kinds)
    print("unfinished processes at each kill:", unfinished_at_kill)
    # The kills fell while processes ran, not after they had all finished.
    assert sum(1 for unfinished in unfinished_at_kill if unfinished > 0) >= 4, unfinished_at_kill


def _completed(installation: Installation) -> int:
    return installation.store.counts_by_status().get("completed", 0)


def _answered(installation: Installation, prefix: str = "crash", count: int = PROCESSES) -> int:
    """Workitems answered so far, over all processes."""
    return sum(
        1
        for i in range(count)
        for e in installation.store.journal(f"{prefix}-{i}")
        if e.kind == "answered"
    )


def _progress(
    installation: Installation, answered: int, prefix: str = "crash", count: int = PROCESSES
) -> Callable[[], bool]:
    """Whether more workitems were answered since ``answered``, or every process is done."""
    return lambda: (
        _answered(installation, prefix, count) > answered
        or installation.store.counts_by_status().get("completed", 0) == count
    )


@pytest.mark.exclusive  # it stops the shared RabbitMQ: `make test` runs it after the others
def test_rabbitmq_restart_mid_run_loses_nothing(installation: Installation) -> None:
    rabbitmqctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    missing = []
    if not Path(rabbitmqctl).exists():
        missing.append(f"rabbitmqctl (not on PATH nor at {rabbitmqctl})")
    if os.geteuid() != 0:
        missing.append("root (rabbitmqctl stop_app and start_app)")
    if missing:
        reason = "restarting RabbitMQ needs " + " and ".join(missing)
        if in_ci():
            pytest.fail(f"{reason}: CI must run this test, so it fails instead of skipping")
        pytest.skip(reason)
    installation.start_daemon()
    for _ in range(2):
        installation.start_worker("inc", "tests.participants:inc", {"INC_DELAY": "0.004"})
    with installation.launcher() as launcher:
        pids = [launcher.launch(FIVE, {"n": 0}, process_id=f"bounce-{i}") for i in range(50)]
    installation.wait_for(_progress(installation, 0, prefix="bounce", count=50), what="work")
    subprocess.run([rabbitmqctl, "stop_app"], check=True, capture_output=True, timeout=120)
    try:
        installation.wait_for(
            lambda: "retrying in" in daemon_log(installation), what="the daemon to lose the broker"
        )
    finally:
        subprocess.run([rabbitmqctl, "start_app"], check=True, capture_output=True, timeout=120)
    for pid in pids:
        record = installation.wait_finished(pid, timeout=120)
        assert record.status == "completed", pid
        assert record.state["scopes"][""]["seen"] == [1, 2, 3, 4, 5], pid
        assert installation.store.pending_workitems(pid) == []


def daemon_log(installation: Installation) -> str:
    return "".join(
        log.read_text(errors="replace") for log in installation.logs if ".daemon." in log.name
    )


def test_database_connections_lost_mid_run_loses_nothing(
    rabbitmq: None, postgres_url: str, tmp_path: Path
) -> None:
    """PostgreSQL drops every connection of the daemon mid-run (as in a database restart).

    Only this installation's connections, named by their application_name: the other tests
    running meanwhile share the database."""
    import sqlalchemy as sa

    name = f"bureaucrat-{uuid.uuid4().hex[:12]}"
    url = sa.make_url(postgres_url).update_query_dict({"application_name": name})
    with Installation(tmp_path, url.render_as_string(hide_password=False)) as install:
        install.start_daemon()
        install.start_worker("inc", "tests.participants:inc", {"INC_DELAY": "0.004"})
        with install.launcher() as launcher:
            pids = [launcher.launch(FIVE, {"n": 0}, process_id=f"db-{i}") for i in range(30)]
        install.wait_for(_progress(install, 0, prefix="db", count=30), what="work")
        admin = sa.create_engine(postgres_url)
        with admin.connect() as connection:
            killed = connection.execute(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = :name"
                ),
                {"name": name},
            ).scalar()
        admin.dispose()
        assert killed
        for pid in pids:
            record = install.wait_finished(pid, timeout=120)
            assert record.status == "completed", pid
            assert record.state["scopes"][""]["seen"] == [1, 2, 3, 4, 5], pid
            assert install.store.pending_workitems(pid) == []


def test_two_daemons_share_one_database_and_do_everything_once(
    rabbitmq: None, postgres_url: str, tmp_path: Path
) -> None:
    """Scale-out: two daemons consume the same queues and share PostgreSQL; no step is applied
    twice and no workitem is dispatched twice."""
    with Installation(tmp_path, postgres_url, prefetch=5) as install:
        install.start_daemon()
        install.start_another_daemon()
        for _ in range(2):
            install.start_worker("inc", "tests.participants:inc")
        broker = Broker(AMQP_URL)  # both must consume before the launches go out
        try:
            queue = install.config.launch_queue
            install.wait_for(lambda: broker.consumers(queue) == 2, what="two daemons consuming")
        finally:
            broker.close()
        with install.launcher() as launcher:
            pids = [launcher.launch(FIVE, {"n": 0}, process_id=f"two-{i}") for i in range(60)]
        for pid in pids:
            record = install.wait_finished(pid, timeout=120)
            assert record.status == "completed", pid
            assert record.state["scopes"][""]["seen"] == [1, 2, 3, 4, 5], pid
            kinds = [entry.kind for entry in install.store.journal(pid)]
            assert kinds.count("dispatched") == kinds.count("answered") == 5, (pid, kinds)
            assert "ignored" not in kinds, (pid, kinds)  # no duplicate answer came back
        daemon_logs = [log.read_text() for log in install.logs if ".daemon." in log.name]
        launches = [text.count("launched two-") for text in daemon_logs]
        assert sum(launches) == 60 and all(launches), launches  # both served, each launch once
        assert not any(
            "unknown workitem" in text or "internal error" in text for text in daemon_logs
        )
