"""``Launcher``: the original's call, ``Launcher({"host": ..., "launcher_routing_key": ...})
.launch(path, fields)``, next to ours (``amqp_url=``, ``config=``). The mapping of the original's
keys needs no broker; what a launch publishes is read back from a real RabbitMQ."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from bureaucrat.config import Config
from bureaucrat.errors import BrokerError, ConfigError
from bureaucrat.launcher import Launcher
from bureaucrat.messages import MessageError
from tests.brokers import AMQP_URL, delete, require_rabbitmq, unique
from tests.harness import Installation

DEFINITION = '<process><context><property name="n" type="int">1</property></context></process>'
WAIT = 10.0
"""Seconds a published launch has to arrive."""

BROKER = pika.URLParameters(AMQP_URL)
ORIGINAL = {  # the broker the tests use, as the original's dict names it
    "host": BROKER.host,
    "port": str(BROKER.port),
    "user": "guest",
    "passwd": "guest",
    "vhost": "/",
}


# the original's dict, without a broker ----------------------------------------------------------


def test_the_original_dict_makes_the_broker_url_and_launch_queue() -> None:
    launcher = Launcher(
        {
            "host": "rabbit.example",
            "user": "ops",
            "passwd": "p@ss:word/",
            "vhost": "/builds",
            "launcher_routing_key": "builds_launch",
        }
    )
    assert launcher.amqp_url == "amqp://ops:p%40ss%3Aword%2F@rabbit.example:5672/%2Fbuilds"
    assert launcher.config.launch_queue == "builds_launch"
    assert (launcher.launch_exchange, launcher.launch_routing_key) == ("", "builds_launch")
    assert launcher.config.message_queue == "bureaucrat_msgs"  # what the dict does not name


def test_every_key_of_the_original_dict_is_optional() -> None:
    launcher = Launcher({})
    assert launcher.amqp_url == Config().amqp_url
    assert launcher.config.launch_queue == "bureaucrat"
    assert launcher.launch_exchange == ""
    default = Launcher({"host": "localhost"})
    assert default.amqp_url == "amqp://guest:guest@localhost:5672/%2F"


def test_the_original_dict_takes_its_place_over_a_config() -> None:
    base = Config(amqp_url="amqp://a:b@elsewhere:5672/%2F", event_queue="events")
    launcher = Launcher({"host": "h", "launcher_routing_key": "go"}, config=base)
    assert launcher.amqp_url == "amqp://guest:guest@h:5672/%2F"
    assert (launcher.config.launch_queue, launcher.config.event_queue) == ("go", "events")
    only_queue = Launcher({"launcher_routing_key": "go"}, config=base)
    assert only_queue.amqp_url == base.amqp_url


def test_ours_keep_working() -> None:
    url = "amqp://u:p@somewhere:5673/v"
    assert Launcher(url).amqp_url == url  # the URL, positional, as before
    assert Launcher(amqp_url=url).amqp_url == url
    config = Config(amqp_url=url, launch_queue="mine")
    launcher = Launcher(config=config)
    assert (launcher.amqp_url, launcher.config.launch_queue) == (url, "mine")


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"host": 5}, "'host' must be a string, not int"),
        ({"port": "http"}, "Launcher: port = 'http' is not a port number"),
        ({"port": 70000}, "is not a port number"),
        ({"launcher_routing_key": "bureaucrat_msgs"}, "must differ from"),
        ({"launcher_routing_key": "amq.launch"}, "reserved by RabbitMQ"),
        ({"launcher_routing_key": "x" * 201}, "over the limit of 200"),
        ({"launcher_routing_key": "a\x00"}, "contains a NUL character"),
        ({"launcher_exchange": "ex\n"}, "launcher_exchange contains a control character"),
        ({"launcher_exchange": "ex", "launcher_routing_key": "k" * 256}, "over the limit"),
        ({"launcher_exchange": None}, "must be a string, not NoneType"),
    ],
)
def test_a_value_that_cannot_be_used_is_a_config_error(
    options: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        Launcher(options)
    assert problem in str(caught.value)


def test_keys_the_original_did_not_have_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bureaucrat.launcher"):
        Launcher({"host": "h", "storage_dir": "/tmp/processes"})
    assert "storage_dir not used and ignored" in caplog.text


# with RabbitMQ ----------------------------------------------------------------------------------


def take(queue: str) -> tuple[pika.BasicProperties, dict[str, Any]]:
    """The first message on ``queue``, waited for at most ``WAIT`` seconds."""
    connection = pika.BlockingConnection(BROKER)
    try:
        channel = connection.channel()
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            method, properties, body = channel.basic_get(queue, auto_ack=True)
            if method is not None:
                return properties, json.loads(body)
            connection.process_data_events(time_limit=0.05)
        raise AssertionError(f"nothing arrived on {queue} within {WAIT} s")
    finally:
        connection.close()


@pytest.fixture
def routing_key() -> Iterator[str]:
    require_rabbitmq()
    key = unique("launch")
    yield key
    delete(queues=[key])


def test_an_original_launcher_publishes_to_its_routing_key(
    routing_key: str, tmp_path: Path
) -> None:
    path = tmp_path / "order.xml"
    path.write_text(DEFINITION)
    launcher = Launcher({**ORIGINAL, "launcher_routing_key": routing_key})
    try:
        process_id = launcher.launch(str(path), {"n": 42, "who": "ci"})
    finally:
        launcher.close()
    properties, body = take(routing_key)
    assert body == {"definition": DEFINITION, "fields": {"n": 42, "who": "ci"}}
    assert properties.message_id == process_id
    assert properties.content_type == "application/json" and properties.delivery_mode == 2


def test_the_definition_may_be_a_path_its_text_or_an_open_file(
    routing_key: str, tmp_path: Path
) -> None:
    path = tmp_path / "order.xml"
    path.write_text(DEFINITION)
    sources: list[Any] = [
        path,
        DEFINITION,
        io.StringIO(DEFINITION),
        io.BytesIO(DEFINITION.encode()),
    ]
    with Launcher({**ORIGINAL, "launcher_routing_key": routing_key}) as launcher:
        ids = [launcher.launch(source, {}) for source in sources]
    for process_id in ids:
        properties, body = take(routing_key)
        assert properties.message_id == process_id and body["definition"] == DEFINITION
    assert len(set(ids)) == len(ids)


def test_an_original_launcher_publishes_to_its_exchange() -> None:
    """``launcher_exchange``: launches go to that exchange with the routing key, which is then
    the exchange's business, not a queue the launcher declares."""
    require_rabbitmq()
    exchange, queue = unique("launcher-exchange"), unique("launched")
    connection = pika.BlockingConnection(BROKER)
    channel: BlockingChannel = connection.channel()
    try:
        channel.exchange_declare(exchange, exchange_type="topic", auto_delete=False)
        channel.queue_declare(queue)
        channel.queue_bind(queue, exchange, routing_key="launch.#")
        options = {**ORIGINAL, "launcher_exchange": exchange, "launcher_routing_key": "launch.a"}
        with Launcher(options) as launcher:
            process_id = launcher.launch(DEFINITION, {"n": 2})
        properties, body = take(queue)
        assert properties.message_id == process_id
        assert body == {"definition": DEFINITION, "fields": {"n": 2}}
        with pytest.raises(pika.exceptions.ChannelClosedByBroker):
            channel.queue_declare("launch.a", passive=True)  # no queue named after the key
    finally:
        connection.close()
        delete(queues=[queue], exchanges=[exchange])


def test_an_original_launcher_with_a_wrong_password_says_so() -> None:
    require_rabbitmq()
    with (
        Launcher({**ORIGINAL, "passwd": "not-the-password"}) as launcher,
        pytest.raises(BrokerError) as caught,
    ):
        launcher.launch(DEFINITION, {})
    assert "cannot connect to RabbitMQ" in str(caught.value)
    assert "not-the-password" not in str(caught.value)


def test_the_original_launch_and_terminate_reach_the_daemon(
    sqlite_installation: Installation,
) -> None:
    """A process started with the original's launcher call and stopped with the original's
    terminate message (``target``, ``origin``, no ``process_id``)."""
    install = sqlite_installation
    install.start_daemon()
    options = {**ORIGINAL, "launcher_routing_key": install.config.launch_queue}
    definition = '<process><await event="never"/></process>'
    with Launcher(options, config=install.config) as launcher:
        process_id = launcher.launch(definition, {"who": "ci"})
    install.wait_for(lambda: install.awaits(process_id) == ["never"], what="the process to wait")
    body = {"name": "terminate", "target": process_id, "origin": "", "payload": {}}
    install.publish_raw(
        install.config.message_queue,
        json.dumps(body).encode(),
        content_type="application/x-bureaucrat-message",
        delivery_mode=2,
    )
    record = install.wait_finished(process_id)
    assert record.status == "terminated"


@pytest.mark.parametrize(
    ("call", "problem"),
    [
        (lambda launcher: launcher.send_event("x" * 300), "over the limit"),
        (lambda launcher: launcher.send_event("ok", {"a": "\x00"}), "NUL"),
        (lambda launcher: launcher.send_event(""), "must name the event"),
        (lambda launcher: launcher.set_context("p", {}), "at least one property"),
        (lambda launcher: launcher.set_context("p", {"inst:current": 1}), "inst:"),
        (lambda launcher: launcher.rerun("p", ""), "activity"),
        (lambda launcher: launcher.pause("p" * 200), "over the limit"),
    ],
)
def test_the_client_refuses_what_the_engine_would_dead_letter_before_sending_it(
    call: Any, problem: str
) -> None:
    launcher = Launcher(amqp_url="amqp://nobody:nothing@127.0.0.1:1/")  # never reached
    with pytest.raises(MessageError) as error:
        call(launcher)
    assert problem in str(error.value)
