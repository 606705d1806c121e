"""Whether handling a message costs the same with 100 or 100,000 instances stored.

One measured operation is what the service does with a participant response: check the message
id, find the workitem, lock the instance, run the engine's step, apply it with one outbox
message, mark the message processed, commit. The definition loops over an action with a timeout,
so every response answers a workitem, cancels a timer, journals, dispatches the next workitem and
starts the next timer. Filler instances (bulk-inserted) carry realistic rows: a state, a pending
workitem, a timer, a subscription, journal lines, a sent outbox message, a processed message id.

Runs on SQLite (a temporary file) and PostgreSQL (a schema of its own, dropped afterwards), prints
the mean time per operation for each size and the ratio 100k/100 (target: within 1.5x), and
checks with EXPLAIN that no statement of the operation scans a table.

    .venv/bin/python benchmarks/store_scale.py [--ops N] [--sizes 100 100000] [--backends ...]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bureaucrat.engine import commands as cmd
from bureaucrat.engine import events as ev
from bureaucrat.engine import step
from bureaucrat.store import Outgoing, Store
from bureaucrat.store import tables as t
from bureaucrat.store.changes import changes_of
from bureaucrat.store.codec import dumps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.store_fixtures import postgres_schema

LIVE = 100  # instances the measured operations go round
BATCH = 5_000
T0 = 1_750_000_000.0

DEFINITION = """<process name="orders">
  <context>
    <property name="customer" type="str">ACME</property>
    <property name="amount" type="float">12.5</property>
    <property name="items" type="json">[1, 2, 3]</property>
    <property name="n" type="int">0</property>
  </context>
  <all>
    <while>
      <condition>True</condition>
      <action participant="clerk" timeout="3600"/>
      <assign property="n">context["n"] + 1</assign>
    </while>
    <await event="cancel"/>
  </all>
</process>"""


# databases --------------------------------------------------------------------------------------


@contextmanager
def database(backend: str) -> Iterator[str]:
    """A fresh database URL for ``backend``, removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{Path(tmp) / 'bench.db'}"
        return
    with postgres_schema(prefix="bench") as url:
        yield url


# filling ----------------------------------------------------------------------------------------


class Template:
    """The rows of one started instance, to be copied under other ids."""

    def __init__(self, store: Store, digest: str) -> None:
        pid = "TEMPLATE"
        definition = store.definition(digest)
        started = step(definition, None, ev.Start(pid), T0)
        changes = changes_of(pid, started.commands, T0)
        self.digest = digest
        self.state = dumps(started.state)
        self.workitems = changes.workitem_rows()
        self.timers = changes.timer_inserts()
        self.subscriptions = changes.subscription_inserts()
        self.journal = changes.journal

    def rows(self, pid: str, created: float, completed: bool) -> dict[str, list[dict[str, Any]]]:
        def copy(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [json.loads(json.dumps(row).replace("TEMPLATE", pid)) for row in rows]

        instance = {
            "id": pid,
            "definition_hash": self.digest,
            "name": "orders",
            "parent_id": None,
            "parent_activity": None,
            "status": "completed" if completed else "running",
            "state": self.state.replace("TEMPLATE", pid),
            "version": 7,
            "error": None,
            "created_at": created,
            "updated_at": created + 60,
        }
        journal = copy(self.journal) * 3  # some history
        message = f"{pid}-done"
        return {
            "instances": [instance],
            "workitems": [] if completed else copy(self.workitems),
            "timers": [] if completed else copy(self.timers),
            "subscriptions": [] if completed else copy(self.subscriptions),
            "journal": journal,
            "outbox": [_sent_message(pid, message, created)],
            "processed_messages": [{"message_id": message, "processed_at": created}],
        }


def _sent_message(pid: str, message_id: str, at: float) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "instance_id": pid,
        "exchange": "",
        "routing_key": "worker_clerk",
        "properties": dumps({"content_type": "application/json", "delivery_mode": 2}),
        "body": b'{"payload": {"status": "done"}}',
        "created_at": at,
        "sent_at": at + 1,
    }


def fill(store: Store, template: Template, count: int) -> None:
    """Bulk-insert ``count`` filler instances with their rows (``executemany`` in batches)."""
    for start in range(0, count, BATCH):
        batch: dict[str, list[dict[str, Any]]] = {}
        for n in range(start, min(count, start + BATCH)):
            rows = template.rows(f"filler-{n:06d}", T0 - count + n, completed=n % 3 == 0)
            for table, values in rows.items():
                batch.setdefault(table, []).extend(values)
        with store.engine.begin() as connection:
            for table, values in batch.items():
                if values:
                    connection.execute(sa.insert(t.metadata.tables[table]), values)
    with store.engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        connection.exec_driver_sql("ANALYZE")


# the measured operation -------------------------------------------------------------------------


def launch(store: Store, digest: str, pid: str) -> str:
    definition = store.definition(digest)
    with store.transaction() as tx:
        tx.create_instance(pid, digest, "orders", None, None, T0)
        result = step(definition, None, ev.Start(pid), T0)
        tx.apply(pid, result, T0, [])
    return _dispatched(result)


def _dispatched(result: Any) -> str:
    (workitem,) = [c for c in result.commands if isinstance(c, cmd.DispatchWorkitem)]
    return str(workitem.workitem_id)


def handle_response(store: Store, workitem_id: str, message_id: str, now: float) -> str:
    """What the service does with one participant response; the next workitem's id."""
    response = {"workitem_id": workitem_id, "payload": {"status": "done", "checked": True}}
    with store.transaction() as tx:
        if tx.processed(message_id):
            raise RuntimeError("duplicate")
        workitem = tx.workitem(workitem_id)
        assert workitem is not None
        record = tx.lock_instance(workitem.instance_id)
        assert record is not None and record.state is not None
        definition = store.definition(record.definition_hash)
        result = step(definition, record.state, ev.ParticipantResponse(response), now)
        following = _dispatched(result)
        outgoing = Outgoing(
            following, "", "worker_clerk", json.dumps(response).encode(), {"delivery_mode": 2}
        )
        tx.apply(record.id, result, now, [outgoing])
        tx.mark_processed(message_id, now)
    return following


def measure(store: Store, workitems: list[str], ops: int) -> list[float]:
    times = []
    order = list(range(len(workitems)))
    for n in range(ops):
        if n % len(order) == 0:
            random.shuffle(order)
        index = order[n % len(order)]
        started = time.perf_counter()
        workitems[index] = handle_response(store, workitems[index], uuid.uuid4().hex, T0 + n)
        times.append(time.perf_counter() - started)
    return times


# plans ------------------------------------------------------------------------------------------


def scans(store: Store, workitem_id: str) -> tuple[int, list[str]]:
    """The number of statements of one operation, and those whose plan reads a whole table."""
    seen: list[tuple[str, Any]] = []

    def listener(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        seen.append((sql, params[0] if many and params else params))

    sa.event.listen(store.engine, "before_cursor_execute", listener)
    try:
        handle_response(store, workitem_id, uuid.uuid4().hex, T0)
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", listener)
    explain = "EXPLAIN QUERY PLAN " if store.is_sqlite else "EXPLAIN "
    bad = []
    with store.engine.connect() as connection:
        if not store.is_sqlite:  # small tables: ask whether an index *can* serve each statement
            connection.exec_driver_sql("SET enable_seqscan = off")
        for sql, params in seen:
            if sql.split()[0] not in ("SELECT", "UPDATE", "DELETE"):
                continue
            rows = connection.exec_driver_sql(explain + sql, params).all()
            plan = "\n".join(" ".join(str(v) for v in row) for row in rows)
            if "Seq Scan" in plan or re.search(r"\bSCAN (?!CONSTANT ROW)", plan):
                bad.append(f"{sql.split(chr(10))[0]} ...\n{plan}")
    return len(seen), bad


# main -------------------------------------------------------------------------------------------


def run(backend: str, size: int, ops: int) -> tuple[list[float], int, list[str]]:
    with database(backend) as url, Store(url) as store:
        digest = store.add_definition(DEFINITION)
        live = min(LIVE, size)
        workitems = [launch(store, digest, f"live-{n:03d}") for n in range(live)]
        started = time.perf_counter()
        fill(store, Template(store, digest), size - live)
        filled = time.perf_counter() - started
        print(f"  {backend} {size:,}: filled in {filled:.1f} s", file=sys.stderr)
        measure(store, workitems, max(20, ops // 10))  # warm up
        times = measure(store, workitems, ops)
        return (times, *scans(store, workitems[0]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=1000, help="measured operations per case")
    parser.add_argument("--sizes", type=int, nargs=2, default=[100, 100_000])
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    args = parser.parse_args()
    random.seed(1)
    print(
        f"{'backend':<12}{'stored':>10}{'ops':>7}{'mean ms':>10}{'p50 ms':>9}{'p95 ms':>9}"
        f"{'stmts/op':>10}"
    )
    ratios, problems = {}, []
    for backend in args.backends:
        means = []
        for size in args.sizes:
            times, count, bad = run(backend, size, args.ops)
            problems += [f"{backend} {size:,}: {b}" for b in bad]
            means.append(statistics.fmean(times))
            cuts = statistics.quantiles(times, n=20)
            p50, p95 = cuts[9], cuts[18]
            print(
                f"{backend:<12}{size:>10,}{len(times):>7}{means[-1] * 1e3:>10.3f}"
                f"{p50 * 1e3:>9.3f}{p95 * 1e3:>9.3f}{count:>10}"
            )
        ratios[backend] = means[1] / means[0]
    small, large = args.sizes
    for backend, ratio in ratios.items():
        verdict = "ok" if ratio <= 1.5 else "OVER 1.5x"
        print(f"ratio {large:,}/{small:,} {backend:<12}{ratio:>6.2f}x  {verdict}")
    print("index check: " + ("no table scans" if not problems else "SCANS FOUND"))
    for problem in problems:
        print(problem)
    return 0 if not problems and all(r <= 1.5 for r in ratios.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
