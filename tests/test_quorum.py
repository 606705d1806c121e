"""Quorum queues (``queue_type = quorum``) on the real RabbitMQ: how the queues are declared,
the delivery limit that dead-letters a message, and the error when a queue exists as the
other type."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pika
import pika.exceptions as pex
import pytest

from bureaucrat.amqp import Broker, QueueArguments, Topology, queue_arguments
from bureaucrat.config import Config
from bureaucrat.errors import TopologyError
from tests.brokers import AMQP_URL, delete, unique
from tests.harness import ROOT, Installation

pytestmark = pytest.mark.usefixtures("rabbitmq")


@pytest.fixture
def quorum(rabbitmq: None, tmp_path: Path) -> Iterator[Installation]:
    """An installation on quorum queues with a delivery limit of 2."""
    url = f"sqlite:///{tmp_path / 'bureaucrat.db'}"
    with Installation(tmp_path, url, queue_type="quorum", max_redeliveries=2) as install:
        yield install


def redeclare(queue: str, arguments: dict[str, Any] | None) -> str | None:
    """Declare ``queue`` again with ``arguments``: None if RabbitMQ agrees that is how the queue
    is, else its refusal."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        connection.channel().queue_declare(queue, durable=True, arguments=arguments)
    except pex.ChannelClosedByBroker as error:
        return f"{error.reply_code} {error.reply_text}"
    finally:
        if connection.is_open:
            connection.close()
    return None


def declare_classic(queue: str) -> None:
    plain = Broker(AMQP_URL)
    try:
        plain.ensure_queue(queue)
    finally:
        plain.close()


def assert_quorum(queue: str, dead_letter_queue: str, limit: int | None) -> None:
    expected: dict[str, Any] = {"x-queue-type": "quorum"}
    if limit is not None:
        expected |= {
            "x-delivery-limit": limit,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dead_letter_queue,
        }
    assert redeclare(queue, expected) is None
    refusal = redeclare(queue, None)  # as a classic queue
    assert refusal is not None and refusal.startswith("406 PRECONDITION_FAILED")


def test_the_arguments_of_each_queue() -> None:
    config = replace(Config(), queue_type="quorum", max_redeliveries=7)
    assert queue_arguments(config, "bureaucrat") == {
        "x-queue-type": "quorum",
        "x-delivery-limit": 7,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "bureaucrat.dead",
    }
    assert queue_arguments(config, "bureaucrat.dead") == {"x-queue-type": "quorum"}
    assert queue_arguments(Config(), "bureaucrat") is None
    queues = QueueArguments.from_config(config)
    assert queues.owns("worker_stock") and queues.owns("bureaucrat_events")
    assert not queues.owns("celery")


def test_the_engine_and_its_workers_queues_are_quorum_queues(quorum: Installation) -> None:
    config = quorum.config
    quorum.start_daemon()
    with quorum.launcher() as launcher:
        pid = launcher.launch('<process><action participant="inc"/></process>', {"n": 1})
    # The daemon declares the worker's queue when it sends the first workitem.
    quorum.wait_for(lambda: bool(quorum.store.pending_workitems(pid)), what="the workitem")
    for queue in (config.launch_queue, config.message_queue, config.event_queue):
        assert_quorum(queue, config.dead_letter_queue, limit=2)
    assert_quorum(config.worker_queue("inc"), config.dead_letter_queue, limit=2)
    assert_quorum(config.dead_letter_queue, config.dead_letter_queue, limit=None)
    quorum.start_worker("inc", "tests.participants:inc")
    record = quorum.wait_finished(pid)
    assert record.status == "completed"
    assert record.state["scopes"][""]["n"] == 2


def test_a_message_delivered_past_the_limit_is_dead_lettered(quorum: Installation) -> None:
    config = quorum.config
    quorum.publish_raw(config.launch_queue, b"<process/>", message_id="comes-back")
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        deliveries = 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            method, _, _ = channel.basic_get(config.launch_queue)
            if method is not None:
                deliveries += 1
                channel.basic_nack(method.delivery_tag, requeue=True)  # as a crashing consumer
                continue
            method, props, body = channel.basic_get(config.dead_letter_queue, auto_ack=True)
            if method is not None:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"not dead-lettered after {deliveries} deliveries")
    finally:
        connection.close()
    assert deliveries == 1 + config.max_redeliveries
    assert (body, props.message_id) == (b"<process/>", "comes-back")
    assert props.headers["x-first-death-reason"] == "delivery_limit"
    assert props.headers["x-first-death-queue"] == config.launch_queue


def test_a_daemon_on_queues_of_the_other_type_stops_and_says_what_to_do(
    sqlite_installation: Installation,
) -> None:
    install = sqlite_installation  # its queues were declared classic
    quorum_config = install.tmp / "quorum.conf"
    quorum_config.write_text(
        install.config_path.read_text().replace("[bureaucrat]", "[bureaucrat]\nqueue_type = quorum")
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    expected = (
        f"queue {install.config.dead_letter_queue} exists as a classic queue but queue_type = "
        "quorum: delete it (after moving its messages) or set queue_type = classic"
    )
    # It stops by itself (waiting would not help), within the timeout.
    daemon = subprocess.run(
        [sys.executable, "-m", "bureaucrat.cli", "-f", "-c", str(quorum_config)],
        capture_output=True, text=True, timeout=60, env=env, cwd=install.tmp,
    )  # fmt: skip
    assert daemon.returncode == 2
    assert f"CRITICAL stopping: {expected}" in daemon.stderr  # logged, for a daemon's log too
    assert daemon.stderr.count(expected) == 1 and "retrying" not in daemon.stderr
    ctl = subprocess.run(
        [sys.executable, "-m", "bureaucrat.ctl", "-c", str(quorum_config), "event", "go"],
        capture_output=True, text=True, timeout=60, env=env, cwd=install.tmp,
    )  # fmt: skip
    assert (ctl.returncode, ctl.stderr) == (2, f"bureaucratctl: {expected}\n")


@pytest.fixture
def names() -> Iterator[Config]:
    """A config with queue and exchange names of its own (deleted afterwards)."""
    tag = unique("q")
    config = replace(
        Config(),
        launch_queue=f"{tag}.launch",
        message_queue=f"{tag}.msgs",
        event_queue=f"{tag}.events",
        dead_letter_queue=f"{tag}.dead",
        exchange=f"{tag}.x",
        notifications_exchange=f"{tag}.n",
        worker_queue_prefix=f"{tag}.worker_",
    )
    yield config
    queues = [config.launch_queue, config.message_queue, config.event_queue]
    queues += [config.dead_letter_queue, config.worker_queue("p"), f"{tag}.celery"]
    delete(queues, [config.exchange, config.notifications_exchange])


def test_each_mismatch_is_named_with_what_to_do(names: Config) -> None:
    quorum = replace(names, queue_type="quorum")
    Broker(AMQP_URL, topology=Topology.from_config(quorum)).close()

    with pytest.raises(TopologyError) as classic:
        Broker(AMQP_URL, topology=Topology.from_config(names))
    assert str(classic.value) == (
        f"queue {names.dead_letter_queue} exists as a quorum queue but queue_type = classic: "
        "delete it (after moving its messages) or set queue_type = quorum"
    )
    with pytest.raises(TopologyError) as limit:
        Broker(AMQP_URL, topology=Topology.from_config(replace(quorum, max_redeliveries=9)))
    assert str(limit.value) == (
        f"queue {names.launch_queue} exists with another delivery limit (5) than "
        "max_redeliveries = 9: delete it (after moving its messages) or set max_redeliveries = 5"
    )


def test_a_worker_queue_of_the_other_type_is_refused_and_the_broker_goes_on(
    names: Config,
) -> None:
    worker_queue = names.worker_queue("p")
    declare_classic(worker_queue)  # by a worker of an older setup
    broker = Broker(AMQP_URL, topology=Topology.from_config(replace(names, queue_type="quorum")))
    try:
        with pytest.raises(TopologyError, match=f"queue {worker_queue} exists as a classic queue"):
            broker.ensure_queue(worker_queue)
        broker.publish("", names.event_queue, b"{}", {})  # the publishing channel is still open
    finally:
        broker.close()


def test_a_queue_that_is_not_bureaucrats_is_used_as_it_is(names: Config) -> None:
    celery_queue = names.launch_queue.replace(".launch", ".celery")
    declare_classic(celery_queue)  # by a Celery worker
    broker = Broker(AMQP_URL, topology=Topology.from_config(replace(names, queue_type="quorum")))
    try:
        broker.ensure_queue(celery_queue)
        broker.publish("", celery_queue, b"task", {})
    finally:
        broker.close()
    assert redeclare(celery_queue, None) is None  # still classic
