"""Bad input of every kind goes to the dead-letter queue (or the log) while the daemon keeps
serving the good messages sent between the bad ones."""

from __future__ import annotations

import json

import pytest

from tests.harness import Installation

pytestmark = pytest.mark.usefixtures("rabbitmq")

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;">]>
<process><context><property name="x">&lol2;</property></context></process>"""

# (queue kind, body, a phrase the dead-letter reason must contain)
DEAD = [
    ("launch", b"<process><sequence></process>", "malformed XML"),
    ("launch", b"<process><actoin participant='p'/></process>", "unknown element <actoin>"),
    ("launch", b"\xff\xfe<\x00p", "neither UTF-8 XML nor JSON"),
    ("launch", b"[1, 2]", "must be a JSON object"),
    ("launch", b'{"fields": {}}', "'definition'"),
    ("launch", b'{"definition": 5}', "'definition'"),
    ("launch", b'{"definition": "<process/>", "fields": [1]}', "'fields'"),
    ("launch", b"", "malformed XML"),
    ("launch", b"<process><assign property='x'>__import__('os')</assign></process>", "line 1"),
    ("launch", b"<process><call process='proc'/></process>", "$"),
    ("launch", BILLION_LAUGHS, "DOCTYPE"),
    ("launch", b"<notaprocess/>", "<process>"),
    ("launch", b"<process><delay duration='soon'/></process>", "duration"),
    ("msgs", b'{"name": ', "not valid JSON"),
    ("msgs", b"[]", "must be a JSON object"),
    ("msgs", b'{"target": "x", "payload": 5}', "'payload'"),
    ("msgs", b'{"payload": {}}', "neither 'workitem_id' nor 'target'"),
    ("msgs", b'{"name": "terminate"}', "'process_id'"),
    (
        "msgs",
        b'{"name": "child_finished", "process_id": "p", "child_id": "c", "status": "??"}',
        "status",
    ),
    ("msgs", b'{"target": 7, "payload": {}}', "'target'"),
    ("events", b"not json at all", "not valid JSON"),
    ("events", b'{"data": 1}', "'event'"),
    ("events", b'{"event": 5}', "'event'"),
    ("events", b'{"event": "go", "process_id": true}', "'process_id'"),
    ("launch", b"[" * 100_000, "nests more than 100 levels deep"),
    ("launch", b"<process>\x00</process>", "NUL"),
    ("launch", b'{"definition": "<process/>", "fields": {"inst:current": 1}}', "inst:"),
    ("launch", b'{"definition": "<process/>", "fields": {"x": NaN}}', "NaN"),
    ("launch", b'{"definition": "<process/>", "process_id": "' + b"p" * 129 + b'"}', "128"),
    ("msgs", b'{"a": ' * 100_000, "nests more than 100 levels deep"),
    ("msgs", b'{"target": "x_0", "payload": {"\\u0000": 1}}', "NUL"),
    ("msgs", b'{"target": "x_0", "payload": {"a": ["\\ud800"]}}', "lone surrogate"),
    ("msgs", b'{"target": "x_0", "payload": {"a": 1e999}}', "not a JSON number"),
    ("msgs", b'{"target": "x_0", "payload": {"a": "\xff"}}', "not UTF-8"),
    ("msgs", b'{"workitem_id": "' + b"w" * 250 + b'", "payload": {}}', "250 bytes"),
    ("msgs", b'{"name": "retry", "process_id": "p", "activity": 5}', "'activity'"),
    ("msgs", b'{"name": "terminate", "process_id": "p", "reason": [1]}', "'reason'"),
    ("events", b'{"event": "' + b"e" * 201 + b'"}', "over the limit of 200"),
]

# Acknowledged and logged, not dead-lettered: well formed, but about nothing we know.
LOGGED = [
    ("msgs", b'{"name": "response", "target": "nobody_0", "payload": {"status": "done"}}'),
    ("msgs", b'{"workitem_id": "nobody_0.1", "payload": {"status": "done"}}'),
    ("msgs", b'{"name": "terminate", "process_id": "nobody"}'),
    ("events", b'{"event": "nobody-waits"}'),
]


def test_bad_input_is_dead_lettered_and_good_input_still_served(
    sqlite_installation: Installation,
) -> None:
    queues = {
        "launch": sqlite_installation.config.launch_queue,
        "msgs": sqlite_installation.config.message_queue,
        "events": sqlite_installation.config.event_queue,
    }
    sqlite_installation.start_daemon()
    sqlite_installation.start_worker("inc", "tests.participants:inc")
    good = []
    for index, (kind, body, _) in enumerate(DEAD + [(k, b, "") for k, b in LOGGED]):
        sqlite_installation.publish_raw(queues[kind], body)
        launch = {
            "definition": '<process><action participant="inc"/></process>',
            "fields": {"n": index},
        }
        pid = f"good-{index}"
        sqlite_installation.publish_raw(
            queues["launch"],
            json.dumps(launch).encode(),
            message_id=pid,
            content_type="application/json",
        )
        good.append((pid, index))
    for pid, index in good:
        record = sqlite_installation.wait_finished(pid)
        assert record.status == "completed"
        assert record.state["scopes"][""]["n"] == index + 1
    letters = sqlite_installation.dead_letters(len(DEAD))
    assert len(letters) == len(DEAD), sqlite_installation.log_text()[-3000:]
    reasons = {body: headers["x-bureaucrat-error"] for body, headers in letters}
    for _, body, phrase in DEAD:
        assert body in reasons, body
        assert phrase in reasons[body], (body, reasons[body])
    assert (
        sqlite_installation.dead_letters(1, timeout=1) == []
    )  # the logged ones were not dead-lettered
    assert sqlite_installation.daemon is not None and sqlite_installation.daemon.poll() is None
