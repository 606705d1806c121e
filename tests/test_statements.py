"""The statements one message costs, counted, so that they cannot creep back: on the happy path
an answer costs one statement each to remember its id, write the state, the workitems (the one
answered, the one dispatched), the journal and the outbox; a batch adds one to lock its
instances and one to mark sent what the batch before it published."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from bureaucrat.service import Service
from bureaucrat.store import Store
from tests.store_fixtures import postgres_url, store, store_url
from tests.test_service import CONFIG, Message, Recorder, launch

__all__ = ["postgres_url", "store", "store_url"]  # fixtures, imported for pytest

TWO = '<process><action participant="p"/><action participant="p"/></process>'
PER_ANSWER = 6  # processed id, state, workitem answered, workitem dispatched, journal, outbox
PER_BATCH = 4  # begin, lock, mark the previous batch's messages sent, commit


@contextmanager
def counting(store: Store) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement.split()[0].upper())

    sa.event.listen(store.engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", count)


def answers(publisher: Recorder, count: int) -> list[Message]:
    found = []
    for _ in range(count):
        workitem = json.loads(publisher.take("worker_p").body)
        workitem["payload"]["status"] = "done"
        body = json.dumps(workitem).encode()
        found.append(Message(CONFIG.message_queue, body, f"{workitem['workitem_id']}:answer"))
    return found


def test_an_answer_costs_a_fixed_handful_of_statements(store: Store) -> None:
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    for n in range(10):
        service.handle(launch(TWO, {}, f"p{n}"))
    batch = answers(publisher, 10)
    with counting(store) as statements:
        service.handle_batch(batch)
        service.publish_committed()
    savepoints = statements.count("SAVEPOINT") + statements.count("RELEASE")
    work = [s for s in statements if s not in ("SAVEPOINT", "RELEASE")]
    assert len(work) <= PER_BATCH + PER_ANSWER * 10, statements
    assert savepoints == 2 * 10  # one savepoint a message: a failure undoes its own only
    [alone] = answers(publisher, 1)
    with counting(store) as statements:
        service.handle_batch([alone])
        service.publish_committed()
    assert len(statements) <= PER_BATCH + PER_ANSWER, statements  # a batch of one: no savepoint
