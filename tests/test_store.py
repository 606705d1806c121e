"""The store's contract, on SQLite and on PostgreSQL (each test runs on both, real databases).

Steps come from the real engine: a small definition is parsed and ``bureaucrat.engine.step``
produces the state and commands the store persists.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from bureaucrat.config import load_config
from bureaucrat.engine import Step, step
from bureaucrat.engine import commands as cmd
from bureaucrat.engine import events as ev
from bureaucrat.errors import (
    BrokerError,
    DefinitionError,
    SchemaOutdatedError,
    StoreDataError,
    StoreError,
)
from bureaucrat.service import Service
from bureaucrat.store import Outgoing, Store, resolve_url, upgrade
from bureaucrat.store import tables as t
from bureaucrat.store.changes import changes_of
from bureaucrat.store.schema import alembic_config, head_revisions
from tests.store_fixtures import postgres_url, store, store_url

__all__ = ["postgres_url", "store", "store_url"]  # fixtures, imported for pytest

T0 = 1_000_000.0

ACTION = '<process name="one-action"><action participant="clerk"/></process>'
WAITING = """<process name="waiting">
  <all>
    <action participant="clerk"/>
    <delay duration="60"/>
    <await event="go"/>
  </all>
</process>"""
TICKS = """<process name="ticks">
  <context><property name="n" type="int">0</property></context>
  <while>
    <condition>True</condition>
    <await event="tick"/>
    <assign property="n">context["n"] + 1</assign>
  </while>
</process>"""
RETRYING = '<process><action participant="flaky" retries="2"/></process>'


# helpers ----------------------------------------------------------------------------------------


def launch(store: Store, source: str, pid: str, now: float = T0, **fields: Any) -> Step:
    digest = store.add_definition(source)
    definition = store.definition(digest)
    with store.transaction() as tx:
        tx.create_instance(pid, digest, definition.name, None, None, now)
        result = step(definition, None, ev.Start(pid, fields), now)
        tx.apply(pid, result, now, [])
    return result


def advance(
    store: Store,
    pid: str,
    event: ev.Event,
    now: float = T0 + 1,
    outbox: Sequence[Outgoing] = (),
    fired_timer: str | None = None,
) -> Step:
    with store.transaction() as tx:
        record = tx.lock_instance(pid)
        assert record is not None and record.state is not None
        result = step(store.definition(record.definition_hash), record.state, event, now)
        tx.apply(pid, result, now, outbox, fired_timer)
    return result


def rows(store: Store, table: sa.Table, **where: Any) -> list[dict[str, Any]]:
    query = sa.select(table).where(*(table.c[k] == v for k, v in where.items()))
    with store.engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def pending_message(store: Store, pid: str) -> dict[str, Any]:
    """The workitem message the instance waits on, as a participant would receive it."""
    record = store.instance(pid)
    assert record is not None and record.state is not None
    (workitem_id,) = record.state["workitems"]
    return {"workitem_id": workitem_id, "target": f"{pid}_0", "payload": {"status": "done"}}


def answer(store: Store, pid: str, status: str = "done", now: float = T0 + 1) -> Step:
    message = pending_message(store, pid)
    message["payload"] = {"status": status, "error": "nope"}
    return advance(store, pid, ev.ParticipantResponse(message), now)


def message(n: int) -> Outgoing:
    return Outgoing(
        message_id=f"m{n}",
        exchange="",
        routing_key="worker_clerk",
        body=b'{"n": %d}' % n,
        properties={"content_type": "application/json", "delivery_mode": 2, "headers": {"n": n}},
    )


@contextmanager
def statements(store: Store) -> Iterator[list[tuple[str, Any]]]:
    """The SQL statements (with their first parameter set) run on ``store`` in the block."""
    seen: list[tuple[str, Any]] = []

    def listener(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        seen.append((sql, params[0] if many and params else params))

    sa.event.listen(store.engine, "before_cursor_execute", listener)
    try:
        yield seen
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", listener)


# instances --------------------------------------------------------------------------------------


def test_a_fresh_database_gets_the_current_schema(store: Store) -> None:
    with store.engine.connect() as connection:
        names = set(sa.inspect(connection).get_table_names())
        current = set(MigrationContext.configure(connection).get_current_heads())
    assert set(t.TABLES) <= names
    assert current == head_revisions()


def test_the_migrations_build_exactly_the_tables_of_tables_py(store: Store) -> None:
    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), t.metadata)
    assert differences == []


def test_an_instance_round_trips_through_create_apply_and_lock(store: Store) -> None:
    started = launch(store, ACTION, "p1")
    with store.transaction() as tx:
        record = tx.lock_instance("p1")
    assert record is not None
    assert record.state == started.state
    assert (record.version, record.status, record.name) == (1, "running", "one-action")
    assert (record.created_at, record.updated_at, record.error) == (T0, T0, None)
    finished = answer(store, "p1", now=T0 + 5)
    record = store.instance("p1")
    assert record is not None and record.state == finished.state
    assert (record.version, record.status, record.updated_at) == (2, "completed", T0 + 5)


def test_apply_returns_the_new_version(store: Store) -> None:
    launch(store, TICKS, "p1")
    with store.transaction() as tx:
        record = tx.lock_instance("p1")
        assert record is not None and record.state is not None
        result = step(store.definition(record.definition_hash), record.state, ev.Start("p1"), T0)
        assert tx.apply("p1", result, T0, []) == 2


def test_a_missing_instance_is_none(store: Store) -> None:
    with store.transaction() as tx:
        assert tx.lock_instance("nobody") is None
        assert not tx.instance_exists("nobody")
    assert store.instance("nobody") is None
    launch(store, ACTION, "p1")
    with store.transaction() as tx:
        assert tx.instance_exists("p1")


def test_reading_an_instance_without_a_lock_in_a_transaction(store: Store) -> None:
    """What a control message, a restart or a subprocess's end reads of an instance."""
    started = launch(store, TICKS, "p1")
    launch(store, ACTION, "p2")
    launch(store, TICKS, "set-aside")
    launch(store, TICKS, "garbled")
    write_state(store, "garbled", "{not json")
    with store.transaction() as tx:
        tx.mark_broken("set-aside", "testing", T0 + 1)
    with store.transaction() as tx:
        assert tx.instance("nobody") is None
        record = tx.instance("p1")
        assert record is not None and (record.id, record.name) == ("p1", "ticks")
        assert (record.status, record.state, record.version) == ("running", started.state, 1)
        broken = tx.instance("set-aside")
        assert broken is not None and (broken.id, broken.status) == ("set-aside", "broken")
        assert (broken.state, broken.error, broken.updated_at) == (None, "testing", T0 + 1)
        garbled = tx.instance("garbled")
        assert garbled is not None and (garbled.id, garbled.status) == ("garbled", "running")
        assert garbled.state is None


def test_message_ids_preloaded_for_a_batch_are_answered_from_memory(store: Store) -> None:
    with store.transaction() as tx:
        tx.mark_processed("old", T0)
    with statements(store) as seen, store.transaction() as tx:
        tx.deferred = True
        tx.preload_processed(["new", "old"])
        preloading = len(seen)
        assert not tx.first_time("old", T0 + 1)
        assert tx.first_time("new", T0 + 1)
        assert not tx.first_time("new", T0 + 1)  # a second copy in the same batch
        assert len(seen) == preloading  # no statement until the batch is written
        tx.flush()
    with store.transaction() as tx:
        assert tx.processed("old") and tx.processed("new")


def test_a_forgotten_message_id_is_new_again_and_only_that_one(store: Store) -> None:
    with store.transaction() as tx:
        assert tx.first_time("m1", T0) and tx.first_time("m2", T0)
        tx.forget_processed("m1")
    with store.transaction() as tx:
        assert not tx.processed("m1") and tx.processed("m2")
        assert tx.first_time("m1", T0 + 1) and not tx.first_time("m2", T0 + 1)


def test_a_subprocess_keeps_its_parent(store: Store) -> None:
    digest = store.add_definition(ACTION)
    with store.transaction() as tx:
        tx.create_instance("child", digest, None, "parent", "parent_0", T0)
    record = store.instance("child")
    assert record is not None
    assert (record.parent_id, record.parent_activity) == ("parent", "parent_0")


def test_creating_an_instance_twice_is_refused_data_not_a_lost_database(store: Store) -> None:
    launch(store, ACTION, "p1")
    with pytest.raises(StoreDataError), store.transaction() as tx:
        tx.create_instance("p1", "x", None, None, None, T0)


def test_a_failed_block_rolls_the_whole_transaction_back(store: Store) -> None:
    launch(store, ACTION, "p1")
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.mark_processed("m1", T0)
        tx.mark_broken("p1", "testing", T0)
        raise RuntimeError("boom")
    with store.transaction() as tx:
        assert not tx.processed("m1")
    record = store.instance("p1")
    assert record is not None and record.status == "running"


# what each command does to its table ------------------------------------------------------------


def test_dispatch_inserts_a_pending_workitem_and_the_answer_marks_it(store: Store) -> None:
    started = launch(store, ACTION, "p1")
    (workitem,) = rows(store, t.workitems)
    assert workitem["instance_id"] == "p1" and workitem["participant"] == "clerk"
    assert (workitem["status"], workitem["attempt"]) == ("pending", 1)
    assert workitem["dispatched_at"] == T0
    assert workitem["id"] in started.state["workitems"]
    assert [w.id for w in store.pending_workitems("p1")] == [workitem["id"]]
    launch(store, ACTION, "p2")  # a second workitem: the look-up must pick the one named
    with store.transaction() as tx:
        found = tx.workitem(workitem["id"])
        assert tx.workitem("nothing") is None
        # looked up without the batch's lock having fetched it beforehand
        assert tx.instance_of_workitem(workitem["id"]) == "p1"
        assert tx.instance_of_workitem("nothing") is None
    assert found is not None and found.activity == "p1_0"
    answer(store, "p1", now=T0 + 3)
    (workitem,) = [w for w in rows(store, t.workitems) if w["instance_id"] == "p1"]
    assert (workitem["status"], workitem["answered_at"]) == ("answered", T0 + 3)
    assert store.pending_workitems("p1") == []


def test_a_retry_dispatches_the_next_attempt(store: Store) -> None:
    launch(store, RETRYING, "p1")
    answer(store, "p1", status="error")
    by_attempt = {w["attempt"]: w["status"] for w in rows(store, t.workitems)}
    assert by_attempt == {1: "answered", 2: "pending"}


def test_terminating_cancels_workitems_timers_and_subscriptions(store: Store) -> None:
    launch(store, WAITING, "p1")
    (timer,) = rows(store, t.timers)
    assert (timer["instance_id"], timer["kind"], timer["due"]) == ("p1", "delay", T0 + 60)
    assert timer["claimed_until"] is None
    (subscription,) = rows(store, t.subscriptions)
    assert subscription == {"instance_id": "p1", "activity": "p1_0_2", "event": "go"}
    advance(store, "p1", ev.Terminate("enough"))
    assert [w["status"] for w in rows(store, t.workitems)] == ["cancelled"]
    assert rows(store, t.timers) == []
    assert rows(store, t.subscriptions) == []
    record = store.instance("p1")
    assert record is not None and record.status == "terminated"


def test_a_fired_timer_is_deleted(store: Store) -> None:
    started = launch(store, '<process><delay duration="5"/></process>', "p1")
    (timer_id,) = started.state["timers"]
    result = advance(store, "p1", ev.TimerFired(timer_id), T0 + 5, fired_timer=timer_id)
    assert result.state["status"] == "completed"
    assert rows(store, t.timers) == []


def test_an_event_ends_the_subscription(store: Store) -> None:
    launch(store, '<process><await event="go"/></process>', "p1")
    with store.transaction() as tx:
        assert tx.subscribers("go") == ["p1"]
    advance(store, "p1", ev.EventReceived("go"))
    assert rows(store, t.subscriptions) == []


def test_an_await_in_a_loop_resubscribes_in_one_step(store: Store) -> None:
    launch(store, TICKS, "p1")
    result = advance(store, "p1", ev.EventReceived("tick"))
    assert result.state["scopes"][""]["n"] == 1
    assert [s["event"] for s in rows(store, t.subscriptions)] == ["tick"]


def test_subscribers_by_event_and_by_process(store: Store) -> None:
    for pid in ("a", "b"):
        launch(store, WAITING, pid)
    launch(store, TICKS, "c")
    with store.transaction() as tx:
        assert tx.subscribers("go") == ["a", "b"]
        assert tx.subscribers("go", "b") == ["b"]
        assert tx.subscribers("go", "c") == []
        assert tx.subscribers("tick") == ["c"]
        assert tx.subscribers("nothing") == []


def test_the_journal_records_every_step_in_order(store: Store) -> None:
    launch(store, ACTION, "p1")
    answer(store, "p1", now=T0 + 2)
    entries = store.journal("p1")
    assert [e.kind for e in entries] == ["launched", "dispatched", "answered", "completed"]
    assert entries[0].activity == "p1" and entries[0].at == T0
    assert entries[1].details["participant"] == "clerk"
    assert entries[2].details["status"] == "done" and entries[2].at == T0 + 2
    assert store.journal("p1", limit=2) == entries[-2:]
    assert store.journal("nobody") == []


# outbox and processed messages ------------------------------------------------------------------


def test_outbox_messages_wait_until_marked_sent(store: Store) -> None:
    launch(store, TICKS, "p1")
    advance(store, "p1", ev.EventReceived("tick"), outbox=[message(1), message(2)])
    unsent = store.unsent()
    assert [row.message for row in unsent] == [message(1), message(2)]
    assert {row.instance_id for row in unsent} == {"p1"}
    assert [row.message.message_id for row in store.unsent(limit=1)] == ["m1"]
    store.mark_sent([unsent[0].id], T0 + 9)
    assert [row.message.message_id for row in store.unsent()] == ["m2"]
    store.mark_sent([unsent[1].id], T0 + 9)
    store.mark_sent([], T0 + 9)
    assert store.unsent() == []


def test_marking_messages_sent_does_not_wait_for_postgresqls_disk_flush(store: Store) -> None:
    """Marks lost in a database crash only mean messages published again (their ids are
    stable); SQLite has no such setting and is left as it is."""
    with store.transaction() as tx:
        tx.without_waiting_for_disk()
        if not store.is_sqlite:
            setting = tx.connection.exec_driver_sql("SHOW synchronous_commit").scalar()
            assert setting == "off"
    if not store.is_sqlite:
        with store.transaction() as tx:  # for this transaction only
            setting = tx.connection.exec_driver_sql("SHOW synchronous_commit").scalar()
            assert setting == "on"


def test_a_message_id_already_in_the_outbox_is_not_sent_twice(store: Store) -> None:
    launch(store, TICKS, "p1")
    advance(store, "p1", ev.EventReceived("tick"), outbox=[message(1)])
    advance(store, "p1", ev.EventReceived("tick"), outbox=[message(1), message(2)])
    assert [row.message.message_id for row in store.unsent()] == ["m1", "m2"]


def test_processed_message_ids(store: Store) -> None:
    with store.transaction() as tx:
        assert not tx.processed("m1")
        tx.mark_processed("m1", T0)
        tx.mark_processed("m1", T0)
        assert tx.processed("m1")
    with store.transaction() as tx:
        assert tx.processed("m1") and not tx.processed("m2")


def test_prune_forgets_old_sent_messages_and_processed_ids(store: Store) -> None:
    launch(store, TICKS, "p1")
    advance(store, "p1", ev.EventReceived("tick"), outbox=[message(1), message(2)])
    first, _second = store.unsent()
    store.mark_sent([first.id], T0 + 10)
    with store.transaction() as tx:
        tx.mark_processed("old", T0)
        tx.mark_processed("new", T0 + 100)
    assert store.prune(T0 + 50) == 2
    assert [row.message.message_id for row in store.unsent()] == ["m2"]
    with store.transaction() as tx:
        assert tx.processed("new") and not tx.processed("old")


# timers -----------------------------------------------------------------------------------------


def delays(store: Store, *durations: int) -> list[str]:
    ids = []
    for n, duration in enumerate(durations):
        started = launch(store, f'<process><delay duration="{duration}"/></process>', f"d{n}")
        ids.extend(started.state["timers"])
    return ids


def test_claiming_due_timers_respects_the_lease(store: Store) -> None:
    late, early, later = delays(store, 20, 10, 100)
    assert store.next_timer_due() == T0 + 10
    assert store.claim_due_timers(T0 + 5, 10) == []
    claimed = store.claim_due_timers(T0 + 30, 10, lease=30)
    assert [timer.id for timer in claimed] == [early, late]
    assert {timer.claimed_until for timer in claimed} == {T0 + 60}
    assert store.claim_due_timers(T0 + 40, 10) == []  # leased
    assert store.next_timer_due() == T0 + 60  # the lease ends before ``later`` is due
    again = store.claim_due_timers(T0 + 61, 1, lease=30)  # the claimer must have died
    assert [timer.id for timer in again] == [early]
    assert [timer.id for timer in store.claim_due_timers(T0 + 61, 10)] == [late]
    with store.transaction() as tx:
        found = tx.timer(later)
        assert tx.timer("gone") is None
    assert found is not None and found.due == T0 + 100


def test_no_timers_means_nothing_is_due(store: Store) -> None:
    assert store.next_timer_due() is None
    assert store.claim_due_timers(T0, 10) == []


# listing ----------------------------------------------------------------------------------------


def test_listing_pages_by_creation_time_and_filters(store: Store) -> None:
    for n in range(7):
        launch(store, ACTION if n % 2 else TICKS, f"p{n}", now=T0 + n)
    for n in (1, 3):
        answer(store, f"p{n}")
    everything = [r.id for r in store.list_instances()]
    assert everything == [f"p{n}" for n in range(7)]
    pages, after = [], None
    while page := store.list_instances(limit=3, after=after):
        pages.append([r.id for r in page])
        after = page[-1].id
    assert pages == [["p0", "p1", "p2"], ["p3", "p4", "p5"], ["p6"]]
    assert [r.id for r in store.list_instances(status="completed")] == ["p1", "p3"]
    assert [r.id for r in store.list_instances(status="running", limit=2, after="p2")] == [
        "p4",
        "p5",
    ]
    assert [r.id for r in store.list_instances(name="one-action")] == ["p1", "p3", "p5"]
    assert [r.id for r in store.list_instances(since=T0 + 2, until=T0 + 4)] == ["p2", "p3"]
    assert store.counts_by_status() == {"completed": 2, "running": 5}


def test_listing_after_the_same_creation_time_goes_by_id(store: Store) -> None:
    for pid in ("b", "a", "c"):
        launch(store, TICKS, pid, now=T0)
    assert [r.id for r in store.list_instances(after="a")] == ["b", "c"]


def test_listing_after_an_unknown_id_is_an_error(store: Store) -> None:
    with pytest.raises(StoreError, match="no instance nobody"):
        store.list_instances(after="nobody")


# broken rows ------------------------------------------------------------------------------------


def write_state(store: Store, pid: str, text: str) -> None:
    with store.engine.begin() as connection:
        connection.execute(sa.update(t.instances).where(t.instances.c.id == pid).values(state=text))


@pytest.mark.parametrize("garbage", ["{not json", "[1, 2]", '"text"'])
def test_an_undecodable_state_marks_the_instance_broken(
    store: Store, garbage: str, caplog: pytest.LogCaptureFixture
) -> None:
    launch(store, TICKS, "bad")
    launch(store, TICKS, "good")
    write_state(store, "bad", garbage)
    with caplog.at_level(logging.ERROR, logger="bureaucrat.store"), store.transaction() as tx:
        record = tx.lock_instance("bad")
    assert record is not None and record.state is None
    assert record.status == "broken" and record.error is not None
    assert "cannot be decoded" in record.error
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.ERROR, f"instance bad is broken: {record.error}")
    ]
    stored = store.instance("bad")
    assert stored is not None
    assert (stored.status, stored.state, stored.error) == ("broken", None, record.error)
    assert stored.updated_at == record.updated_at  # when it was found broken
    assert store.counts_by_status() == {"broken": 1, "running": 1}
    result = advance(store, "good", ev.EventReceived("tick"))
    assert result.state["scopes"][""]["n"] == 1
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="bureaucrat.store"), store.transaction() as tx:
        again = tx.lock_instance("bad")
    assert again is not None and again.state is None and caplog.records == []


def test_an_undecodable_state_reads_as_none_without_a_lock(store: Store) -> None:
    launch(store, TICKS, "bad")
    write_state(store, "bad", "{")
    record = store.instance("bad")
    assert record is not None and record.state is None and record.status == "running"
    assert [r.state for r in store.list_instances()] == [None]


# definitions ------------------------------------------------------------------------------------


def test_definitions_are_stored_once_and_parsed_once(store: Store, store_url: str) -> None:
    digest = store.add_definition(ACTION)
    assert store.add_definition(ACTION) == digest and len(digest) == 64
    assert store.definition(digest) is store.definition(digest)
    (row,) = rows(store, t.definitions)
    assert (row["hash"], row["name"], row["source"]) == (digest, "one-action", ACTION)
    with Store(store_url) as other:
        assert other.add_definition(ACTION) == digest
        assert other.definition(digest).name == "one-action"
    with Store(store_url) as other:
        assert other.definition(digest).name == "one-action"
    assert len(rows(store, t.definitions)) == 1


def test_definition_errors(store: Store) -> None:
    with pytest.raises(DefinitionError):
        store.add_definition("<process><nonsense/></process>")
    with pytest.raises(StoreDataError, match="no definition"):
        store.definition("0" * 64)


# the schema -------------------------------------------------------------------------------------


def test_an_older_schema_is_refused_until_upgraded(store_url: str) -> None:
    Store(store_url).close()
    engine = sa.create_engine(store_url)
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "base")
    engine.dispose()
    with pytest.raises(SchemaOutdatedError, match="bureaucratctl db upgrade"):
        Store(store_url)
    upgrade(store_url)
    with Store(store_url) as store:
        launch(store, ACTION, "p1")
        assert store.counts_by_status() == {"running": 1}
    upgrade(store_url)  # again: nothing to do


def test_tables_without_a_version_are_an_outdated_schema(store_url: str) -> None:
    engine = sa.create_engine(store_url)
    t.instances.create(engine)
    engine.dispose()
    with pytest.raises(SchemaOutdatedError, match="bureaucratctl db upgrade"):
        Store(store_url)


def test_a_newer_schema_is_refused(store_url: str) -> None:
    Store(store_url).close()
    engine = sa.create_engine(store_url)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = 'ffff'"))
    engine.dispose()
    with pytest.raises(StoreError, match="newer"):
        Store(store_url)


def test_an_unreachable_database_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        Store("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")
    with pytest.raises(StoreError):
        Store(f"sqlite:///{tmp_path}/missing/dir/x.db")
    with pytest.raises(StoreError):
        Store("not a url")


def test_relative_sqlite_paths_are_resolved_against_the_directory(tmp_path: Path) -> None:
    assert resolve_url("sqlite:///x.db", tmp_path) == f"sqlite:///{tmp_path / 'x.db'}"
    assert resolve_url(None, tmp_path) == f"sqlite:///{tmp_path / 'bureaucrat.db'}"
    assert resolve_url("sqlite:////abs/x.db", tmp_path) == "sqlite:////abs/x.db"
    assert resolve_url("sqlite://", tmp_path) == "sqlite://"
    url = "postgresql+psycopg://u:secret@h/db"
    assert resolve_url(url, tmp_path) == url


# hot paths: constant statements, indexes --------------------------------------------------------


def fan_out(width: int) -> str:
    actions = "".join(f'<action participant="p{n}" timeout="60"/>' for n in range(width))
    return f'<process><all>{actions}<await event="go"/></all></process>'


def test_applying_a_step_costs_the_same_statements_whatever_it_holds(store: Store) -> None:
    counts = []
    for width in (1, 10):
        digest = store.add_definition(fan_out(width))
        definition = store.definition(digest)
        pid = f"w{width}"
        outbox = [message(width * 100 + n) for n in range(width)]
        with statements(store) as seen, store.transaction() as tx:
            tx.create_instance(pid, digest, None, None, None, T0)
            tx.apply(pid, step(definition, None, ev.Start(pid), T0), T0, outbox)
        counts.append(len(seen))
        assert len(rows(store, t.workitems, instance_id=pid)) == width
        assert len(rows(store, t.timers, instance_id=pid)) == width
    assert counts[0] == counts[1]


def plan(store: Store, connection: sa.Connection, sql: str, params: Any) -> str:
    prefix = "EXPLAIN QUERY PLAN " if store.is_sqlite else "EXPLAIN "
    result = connection.exec_driver_sql(prefix + sql, params)
    return "\n".join(" ".join(str(value) for value in row) for row in result)


def full_scan(plan: str) -> bool:
    """Whether a query plan reads a whole table or index (SQLite ``SCAN``, PG ``Seq Scan``)."""
    return "Seq Scan" in plan or any(
        re.search(r"\bSCAN (?!CONSTANT ROW)", line) for line in plan.splitlines()
    )


def test_the_hot_paths_use_indexes(store: Store) -> None:
    launch(store, WAITING, "p1")
    with statements(store) as seen:
        work = pending_message(store, "p1")
        with store.transaction() as tx:
            tx.processed("m1")
            workitem = tx.workitem(work["workitem_id"])
            assert workitem is not None
            tx.subscribers("go", "p1")
            tx.timer("t1")
            record = tx.lock_instance(workitem.instance_id)
            assert record is not None and record.state is not None
            event = ev.ParticipantResponse(work)
            result = step(store.definition(record.definition_hash), record.state, event, T0)
            tx.apply("p1", result, T0, [message(1)], fired_timer="t1")
            tx.mark_processed("m1", T0)
        store.claim_due_timers(T0, 10)
        store.unsent(10)
        store.next_timer_due()
        store.list_instances(status="running", after="p1")
        store.pending_workitems("p1")
        store.journal("p1", limit=10)
    checked = [(sql, params) for sql, params in seen if sql.lstrip().split()[0] != "INSERT"]
    assert len(checked) >= 15
    with store.engine.connect() as connection:
        if not store.is_sqlite:  # tiny tables: make the planner show whether an index fits
            connection.exec_driver_sql("SET enable_seqscan = off")
        for sql, params in checked:
            found = plan(store, connection, sql, params)
            assert not full_scan(found), (sql, found)


def test_a_steps_commands_are_folded_into_their_net_effect() -> None:
    commands: list[cmd.Command] = [
        cmd.DispatchWorkitem("w1", "p_0", "clerk", None, None, {}, 2),
        cmd.CancelWorkitem("w1", "p_0"),
        cmd.CancelWorkitem("w0", "p_1"),
        cmd.StartTimer("t1", "p_0", T0 + 5, cmd.TimerKind.TIMEOUT),
        cmd.CancelTimer("t1", "p_0"),
        cmd.StartTimer("t2", "p_2", T0 + 9, cmd.TimerKind.DELAY),
        cmd.Subscribe("go", "p_3"),
        cmd.Unsubscribe("go", "p_3"),
        cmd.Subscribe("again", "p_3"),
        cmd.Unsubscribe("old", "p_4"),
        cmd.Record("answered", "p_5", {"workitem": "w5", "status": "done"}),
    ]
    changes = changes_of("p", commands, T0, [message(1)], fired_timer="t0")
    assert [(w["id"], w["status"], w["attempt"]) for w in changes.workitem_rows()] == [
        ("w1", "cancelled", 2)
    ]
    assert changes.workitem_status_updates() == [
        {"wid": "w0", "new_status": "cancelled", "at": None},
        {"wid": "w5", "new_status": "answered", "at": T0},
    ]
    assert changes.timer_deletes() == [{"tid": "t0"}, {"tid": "t1"}]
    assert [(r["id"], r["kind"], r["due"]) for r in changes.timer_inserts()] == [
        ("t2", "delay", T0 + 9)
    ]
    assert changes.subscription_deletes() == [
        {"iid": "p", "act": "p_3"},
        {"iid": "p", "act": "p_4"},
    ]
    assert changes.subscription_inserts() == [
        {"instance_id": "p", "activity": "p_3", "event": "again"}
    ]
    assert [r["kind"] for r in changes.journal] == ["answered"]
    assert [r["message_id"] for r in changes.outbox] == ["m1"]


# concurrency ------------------------------------------------------------------------------------


def _increments(url: str, pid: str, times: int, errors: list[BaseException]) -> None:
    try:
        with Store(url) as store:
            for n in range(times):
                advance(store, pid, ev.EventReceived("tick"), T0 + n)
    except BaseException as error:
        errors.append(error)


@pytest.mark.slow
def test_concurrent_writers_lose_no_update(store: Store, store_url: str) -> None:
    launch(store, TICKS, "counter")
    errors: list[BaseException] = []
    threads = [
        threading.Thread(target=_increments, args=(store_url, "counter", 200, errors))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    record = store.instance("counter")
    assert record is not None and record.state is not None
    assert record.state["scopes"][""]["n"] == 400
    assert record.version == 401
    assert [s["event"] for s in rows(store, t.subscriptions)] == ["tick"]


def _claim_all(url: str, barrier: threading.Barrier, got: list[str]) -> None:
    with Store(url) as store:
        barrier.wait()
        while claimed := store.claim_due_timers(T0 + 1000, 7):
            got.extend(timer.id for timer in claimed)


def test_concurrent_timer_claimers_never_share_a_timer(postgres_url: str) -> None:
    with Store(postgres_url) as store, store.transaction() as tx:
        timers = [
            {"id": f"t{n}", "instance_id": "i", "activity": "i_0", "kind": "delay", "due": T0 + n}
            for n in range(300)
        ]
        tx.connection.execute(sa.insert(t.timers), timers)
    barrier = threading.Barrier(2)
    results: list[list[str]] = [[], []]
    threads = [
        threading.Thread(target=_claim_all, args=(postgres_url, barrier, got)) for got in results
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    claimed = results[0] + results[1]
    assert len(claimed) == len(set(claimed)) == 300
    assert all(results), "both claimers got timers"


class _SlowRecorder:
    """A publisher that takes a moment per message, so that two relays overlap."""

    def __init__(self) -> None:
        self.published: list[str] = []

    def publish_many(self, messages: Sequence[Outgoing]) -> list[str | None]:
        for message in messages:
            time.sleep(0.002)
            self.published.append(message.message_id)
        return [None] * len(messages)


def _relay(url: str, barrier: threading.Barrier, publisher: _SlowRecorder) -> None:
    with Store(url) as store:
        service = Service(store, load_config(None, environ={}), publisher)
        barrier.wait()
        while service.relay_outbox(limit=10, everything=True):
            pass


def test_concurrent_outbox_relays_never_publish_a_message_twice(postgres_url: str) -> None:
    with Store(postgres_url) as store:
        launch(store, TICKS, "p1")
        advance(store, "p1", ev.EventReceived("tick"), outbox=[message(n) for n in range(200)])
    barrier = threading.Barrier(2)
    publishers = [_SlowRecorder(), _SlowRecorder()]
    threads = [
        threading.Thread(target=_relay, args=(postgres_url, barrier, publisher))
        for publisher in publishers
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    published = publishers[0].published + publishers[1].published
    assert sorted(published) == sorted(f"m{n}" for n in range(200))  # each exactly once
    assert all(publisher.published for publisher in publishers), "both relays published"
    with Store(postgres_url) as store:
        assert store.unsent() == []


def test_a_lost_connection_while_publishing_keeps_every_row_for_the_relay(store: Store) -> None:
    """Which messages of a batch arrived is unknown when the connection is lost mid-way: all of
    them stay unsent, to be published again (their ids are stable, so that is harmless)."""

    class FailsOnThird:
        def __init__(self) -> None:
            self.published: list[str] = []

        def publish_many(self, messages: Sequence[Outgoing]) -> list[str | None]:
            for message in messages:
                if len(self.published) == 2:
                    raise BrokerError("lost RabbitMQ")
                self.published.append(message.message_id)
            return [None] * len(messages)

    launch(store, TICKS, "p1")
    advance(store, "p1", ev.EventReceived("tick"), outbox=[message(n) for n in range(5)])
    publisher = FailsOnThird()
    service = Service(store, load_config(None, environ={}), publisher)
    with pytest.raises(BrokerError):
        service.relay_outbox(everything=True)
    assert publisher.published == ["m0", "m1"]
    assert [row.message.message_id for row in store.unsent()] == [f"m{n}" for n in range(5)]
