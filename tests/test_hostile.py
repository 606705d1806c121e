"""No input can stop the engine: hostile messages and definitions, sent to the real daemon on
SQLite and on PostgreSQL, each followed by a normal process that must complete; then a restart,
after which the daemon serves again (nothing stored can make it crash at start)."""

from __future__ import annotations

import json
import time
from typing import Any

import pika
import pytest

from tests.brokers import AMQP_URL
from tests.harness import Installation, dumps

pytestmark = [pytest.mark.usefixtures("rabbitmq"), pytest.mark.slow]

HELLO = '<process><action participant="inc"/></process>'
DEEP = b"[" * 100_000 + b"]" * 100_000


def launch(definition: str, fields: dict[str, Any] | None = None) -> bytes:
    return dumps({"definition": definition, "fields": fields or {}})


# (queue, body, AMQP properties, a phrase the dead-letter reason must contain)
DEAD: list[tuple[str, bytes, dict[str, Any], str]] = [
    # ids the engine would derive past AMQP's 255-byte short strings
    ("launch", launch(HELLO, {"k": 1}), {"message_id": "a" * 250}, "over the limit of 128"),
    ("launch", dumps({"definition": HELLO, "process_id": "b" * 250}), {}, "over the limit"),
    ("launch", launch(f'<process><action participant="{"p" * 249}"/></process>'), {}, "line 1"),
    (
        "launch",
        launch(f'<process><action participant="p" queue="{"q" * 250}"/></process>'),
        {},
        "queue",
    ),
    # NUL, lone surrogates, non-finite numbers, nesting past the decoder's limit
    ("events", b'{"event": "a\\u0000"}', {}, "NUL"),
    ("launch", launch(HELLO, {"k": 2}), {"message_id": "nul\x00id"}, "NUL"),
    ("launch", b'{"definition": "<process/>", "fields": {"x": "\\ud800"}}', {}, "surrogate"),
    ("msgs", b'{"workitem_id": "a\\u0000", "payload": {"status": "done"}}', {}, "NUL"),
    ("msgs", b'{"target": "x", "payload": {"n": NaN}}', {}, "NaN"),
    ("events", DEEP, {}, "nests more than"),
    ("msgs", DEEP, {}, "nests more than"),
    ("launch", b'{"definition": "<process/>", "fields": ' + DEEP + b"}", {}, "nests more than"),
    # what only the engine may say
    ("launch", launch(HELLO, {"inst:fault": {"code": "x"}}), {}, "inst:"),
    (
        "launch",
        launch('<process><context><property name="inst:x">1</property></context></process>'),
        {},
        "inst:",
    ),
    ("msgs", dumps({"name": "retry", "process_id": "p", "activity": ["p_0"]}), {}, "activity"),
]


def test_hostile_input_never_stops_the_daemon(installation: Installation) -> None:
    config = installation.config
    queues = {"launch": config.launch_queue, "msgs": config.message_queue}
    queues["events"] = config.event_queue
    installation.start_daemon()
    installation.start_worker("inc", "tests.participants:inc")

    # An instance that waits on a workitem nobody serves: hostile answers aimed at it.
    installation.publish_raw(
        queues["launch"],
        launch('<process><action participant="hold"/></process>'),
        message_id="target",
        content_type="application/json",
    )
    workitem = _take(config.worker_queue("hold"))
    assert isinstance(workitem["workitem_id"], str)
    aimed: list[tuple[str, bytes, dict[str, Any], str]] = [
        (
            "msgs",
            dumps({**workitem, "payload": {"status": "done"}}).replace(b'"done"', b'"\\ud800"'),
            {},
            "surrogate",
        ),
        ("msgs", dumps({**workitem, "workitem_id": "w" * 300}), {}, "over the limit"),
    ]
    good: list[tuple[str, int]] = []
    for index, (queue, body, props, _) in enumerate(DEAD + aimed):
        installation.publish_raw(queues[queue], body, **props)
        pid = f"good-{index}"
        installation.publish_raw(
            queues["launch"],
            launch(HELLO, {"n": index}),
            message_id=pid,
            content_type="application/json",
        )
        good.append((pid, index))
    # A forged result for a call that does not exist, with a fault that is not an object.
    forged = {
        "name": "child_finished",
        "process_id": "target",
        "child_id": "target.9",
        "status": "faulted",
        "fault": "x",
    }
    installation.publish_raw(queues["msgs"], dumps(forged))
    for pid, index in good:
        record = installation.wait_finished(pid)
        assert record.status == "completed", installation.log_text()[-3000:]
        assert record.state["scopes"][""]["n"] == index + 1
    expected = {(queues[queue], body): phrase for queue, body, _, phrase in DEAD + aimed}
    letters = installation.dead_letters(len(expected))
    assert len(letters) == len(expected), installation.log_text()[-3000:]
    for body, headers in letters:
        phrase = expected.pop((headers["x-bureaucrat-queue"], body))
        assert phrase in headers["x-bureaucrat-error"], (phrase, headers["x-bureaucrat-error"])
    # The instance the hostile answers were aimed at was never hurt, and its real answer counts.
    assert installation.status("target") == "running"
    installation.publish_raw(
        queues["msgs"], dumps({**workitem, "payload": {**workitem["payload"], "status": "done"}})
    )
    assert installation.wait_finished("target").status == "completed"

    # A restart: nothing stored makes the daemon crash, and it serves again.
    assert installation.stop_daemon() == 0
    installation.start_daemon()
    installation.publish_raw(
        queues["launch"],
        launch(HELLO, {"n": 41}),
        message_id="after-restart",
        content_type="application/json",
    )
    assert installation.wait_finished("after-restart").state["scopes"][""]["n"] == 42
    assert installation.daemon is not None and installation.daemon.poll() is None


def _take(queue: str, timeout: float = 15) -> dict[str, Any]:
    """The next message on ``queue``, decoded (the workitem a participant would get)."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        channel.queue_declare(queue, durable=True)  # the daemon declares it on its first use
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            method, _, body = channel.basic_get(queue, auto_ack=True)
            if method is not None:
                value: dict[str, Any] = json.loads(body)
                channel.queue_delete(queue)
                return value
            connection.sleep(0.05)
    finally:
        connection.close()
    raise AssertionError(f"nothing arrived on {queue}")


def test_definitions_that_would_take_seconds_or_gigabytes_fault_and_the_daemon_goes_on(
    installation: Installation,
) -> None:
    """A state that doubles every round, a loop of costly conditions, large properties sent to
    two hundred participants at once: each instance faults ``LimitExceeded``, promptly, and the
    next process completes (each of these ran for hours or took gigabytes before budgets)."""
    from tests.test_budgets import BURNING, DOUBLING, FAN_OUT

    installation.start_daemon()
    installation.start_worker("inc", "tests.participants:inc")
    queue = installation.config.launch_queue
    for name, definition in (("doubling", DOUBLING), ("burning", BURNING), ("fan", FAN_OUT)):
        installation.publish_raw(
            queue, launch(definition), message_id=name, content_type="application/json"
        )
        installation.publish_raw(
            queue,
            launch(HELLO, {"n": 1}),
            message_id=f"after-{name}",
            content_type="application/json",
        )
    for name in ("doubling", "burning", "fan"):
        record = installation.wait_finished(name, timeout=60)
        assert record.status == "faulted", (name, record.status)
        assert record.state["fault"]["code"] == "LimitExceeded", (name, record.state["fault"])
        assert installation.wait_finished(f"after-{name}").status == "completed"
    assert installation.daemon is not None and installation.daemon.poll() is None
