"""What the console shows, read from the store once for the page and the API alike.

``listing(store, filters)`` is a page of instances (keyset paging, as ``bureaucratctl list``);
``instance_details(store, pid)`` is everything about one instance, its diagram included;
``definition_details(store, digest)`` a definition, its diagram and the instances running it.
The ``*_json`` functions give the API's form of the same data.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import quote

from markupsafe import Markup

from bureaucrat.definition import Definition
from bureaucrat.engine.describe import ActivityView, describe
from bureaucrat.engine.state import Status, path_of
from bureaucrat.errors import BureaucratError
from bureaucrat.store import InstanceRecord, JournalEntry, Store, TimerRecord, WorkitemRecord
from bureaucrat.web.diagram import draw, views_by_path

STATUSES = tuple(status.value for status in Status)
PAGE_SIZES = (20, 50, 100, 200)
JOURNAL_SHOWN = 300
"""The latest journal entries an instance page shows (the API takes ``limit``)."""
JOURNAL_READ = 20_000
"""The latest journal entries ``describe`` reads to tell what the state forgot (which case of a
finished switch ran...): enough for any instance an operator looks at, bounded for the rest."""


class BadFilterError(BureaucratError):
    """A filter of the instance list that cannot be used (shown to the user)."""


def when(seconds: float | None) -> str:
    """A time as the console shows it: UTC, to the second."""
    if seconds is None:
        return "-"
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def iso(seconds: float | None) -> str | None:
    """A time as the API gives it: ISO 8601 in UTC."""
    if seconds is None:
        return None
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="milliseconds")


def url_part(text: str) -> str:
    """``text`` as one segment of a URL path (an id may hold ``/``, ``?``, ``#``...)."""
    return quote(text, safe="")


# the list ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    status: str | None = None
    name: str | None = None
    id_prefix: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 50
    after: str | None = None
    definition: str | None = None

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> Filters:
        """Filters from a query string (``status``, ``name``, ``id``, ``since``, ``until``,
        ``limit``, ``after``, ``definition``); empty values are no filter."""

        def text(key: str) -> str | None:
            value = query.get(key, "").strip()
            return value or None

        status = text("status")
        if status is not None and status not in STATUSES:
            raise BadFilterError(f"unknown status {status!r}: one of {', '.join(STATUSES)}")
        limit_text = text("limit") or "50"
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= 500:
            raise BadFilterError("limit must be a number from 1 to 500")
        return cls(
            status=status,
            name=text("name"),
            id_prefix=text("id"),
            since=_moment(text("since"), "since"),
            until=_moment(text("until"), "until"),
            limit=int(limit_text),
            after=text("after"),
            definition=text("definition"),
        )

    def query(self, **changes: Any) -> str:
        """The query string of these filters, with ``changes`` (None drops a key)."""
        values: dict[str, Any] = {
            "status": self.status,
            "name": self.name,
            "id": self.id_prefix,
            "since": _moment_text(self.since),
            "until": _moment_text(self.until),
            "limit": None if self.limit == 50 else self.limit,
            "definition": self.definition,
            **changes,
        }
        return "&".join(f"{k}={quote(str(v), safe='')}" for k, v in values.items() if v)


def _moment(text: str | None, what: str) -> float | None:
    if text is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadFilterError(f"{what}: {text!r} is not a date or time (2026-11-30T08:00)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def _moment_text(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M")


@dataclass(frozen=True)
class Listing:
    filters: Filters
    rows: list[InstanceRecord]
    next_after: str | None
    """The ``after`` of the next page, None on the last one."""


def listing(store: Store, filters: Filters) -> Listing:
    """One page of instances, oldest first; one more row is read to know whether a next page
    exists."""
    if filters.after is not None and store.instance_version(filters.after) is None:
        raise BadFilterError(f"after: no instance {filters.after} to continue after")
    rows = store.list_instances(
        status=filters.status,
        name=filters.name,
        since=filters.since,
        until=filters.until,
        limit=filters.limit + 1,
        after=filters.after,
        definition=filters.definition,
        id_prefix=filters.id_prefix,
    )
    more = len(rows) > filters.limit
    rows = rows[: filters.limit]
    return Listing(filters, rows, rows[-1].id if more and rows else None)


def instance_summary(record: InstanceRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "status": record.status,
        "version": record.version,
        "parent": record.parent_id,
        "definition": record.definition_hash,
        "created": iso(record.created_at),
        "updated": iso(record.updated_at),
    }


# one instance -----------------------------------------------------------------------------------


@dataclass
class InstanceDetails:
    record: InstanceRecord
    definition: Definition | None
    definition_problem: str | None
    tree: ActivityView | None
    diagram: Markup | None
    context: dict[str, Any]
    fault: dict[str, Any] | None
    workitems: list[WorkitemRecord]
    timers: list[TimerRecord]
    subscriptions: list[tuple[str, str]]
    children: list[InstanceRecord]
    parent: InstanceRecord | None
    journal: list[JournalEntry]
    child_by_activity: dict[str, InstanceRecord] = field(default_factory=dict)
    incident: dict[str, Any] | None = None
    """The fault a suspended instance stopped at, waiting for an operator."""
    held: int = 0
    """Messages a paused or suspended instance keeps for its resume."""

    @property
    def context_json(self) -> str:
        return pretty(self.context)


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def instance_details(
    store: Store, process_id: str, journal_limit: int = JOURNAL_SHOWN
) -> InstanceDetails | None:
    """Everything the instance page shows, or None when there is no such instance."""
    record = store.instance(process_id)
    if record is None:
        return None
    definition: Definition | None = None
    problem: str | None = None
    try:
        definition = store.definition(record.definition_hash)
    except BureaucratError as error:
        problem = str(error)
    state = record.state
    children = store.children_of(record.id)
    child_by_activity = {
        child.parent_activity: child for child in children if child.parent_activity is not None
    }
    journal = store.journal(record.id, limit=max(journal_limit, JOURNAL_READ))
    tree: ActivityView | None = None
    diagram: Markup | None = None
    if definition is not None:
        if state is not None:
            tree = describe(definition, state, [(e.activity, e.kind, e.details) for e in journal])
        links = {}
        for activity, child in child_by_activity.items():
            path = path_of(record.id, activity)
            if path is not None:
                links[path] = f"/instances/{url_part(child.id)}"
        views = views_by_path(tree) if tree is not None else {}
        diagram = draw(definition, views, links, process_id=record.id)
    parent = store.instance(record.parent_id) if record.parent_id else None
    scopes = (state or {}).get("scopes", {})
    return InstanceDetails(
        record=record,
        definition=definition,
        definition_problem=problem,
        tree=tree,
        diagram=diagram,
        context=scopes.get("", {}) if isinstance(scopes, dict) else {},
        fault=_public_fault((state or {}).get("fault")),
        workitems=store.pending_workitems(record.id),
        timers=store.timers_of(record.id),
        subscriptions=store.subscriptions_of(record.id),
        children=children,
        parent=parent,
        journal=journal[-journal_limit:] if journal_limit else [],
        child_by_activity=child_by_activity,
        incident=_public_fault((state or {}).get("incident")),
        held=len(held) if isinstance(held := (state or {}).get("held"), list) else 0,
    )


def _public_fault(fault: Any) -> dict[str, Any] | None:
    if isinstance(fault, dict):
        return {k: fault.get(k) for k in ("code", "message", "activity")}
    return None


def journal_json(entries: list[JournalEntry]) -> list[dict[str, Any]]:
    return [
        {
            "id": e.id,
            "at": iso(e.at),
            "activity": e.activity,
            "kind": e.kind,
            "details": e.details,
        }
        for e in entries
    ]


def instance_json(details: InstanceDetails) -> dict[str, Any]:
    record = details.record
    return {
        **instance_summary(record),
        "error": record.error,
        "context": details.context,
        "fault": details.fault,
        "incident": details.incident,
        "held": details.held,
        "tree": None if details.tree is None else details.tree.to_json(),
        "workitems": [
            {
                "id": w.id,
                "activity": w.activity,
                "participant": w.participant,
                "attempt": w.attempt,
                "dispatched": iso(w.dispatched_at),
            }
            for w in details.workitems
        ],
        "timers": [
            {"id": t.id, "activity": t.activity, "kind": t.kind, "due": iso(t.due)}
            for t in details.timers
        ],
        "subscriptions": [{"activity": a, "event": e} for a, e in details.subscriptions],
        "children": [instance_summary(child) for child in details.children],
        "journal": journal_json(details.journal),
    }


# definitions ------------------------------------------------------------------------------------


@dataclass
class DefinitionDetails:
    digest: str
    source: str
    definition: Definition | None
    problem: str | None
    diagram: Markup | None
    instances: Listing


def definition_details(store: Store, digest: str, filters: Filters) -> DefinitionDetails | None:
    source = store.definition_source(digest)
    if source is None:
        return None
    definition: Definition | None = None
    problem: str | None = None
    try:
        definition = store.definition(digest)
    except BureaucratError as error:
        problem = str(error)
    diagram = None if definition is None else draw(definition)
    instances = listing(store, Filters(**{**asdict(filters), "definition": digest}))
    return DefinitionDetails(digest, source, definition, problem, diagram, instances)


# schedules --------------------------------------------------------------------------------------


def schedules(store: Store) -> list[dict[str, Any]]:
    """The schedules as plain dicts (times as epoch seconds, the definition's XML left out),
    each with its ``state`` and ``timing`` in words, as ``bureaucratctl schedule list`` says."""
    from bureaucrat.ctl_schedules import state_of, timing_text

    found = []
    for record in store.list_schedules():
        row = asdict(record)
        row.pop("source", None)
        row["state"] = state_of(record)
        row["timing"] = timing_text(record)
        found.append({key: _plain(value) for key, value in row.items()})
    return found


def schedule_json(row: Mapping[str, Any]) -> dict[str, Any]:
    times = ("at", "next_due", "last_due", "created_at", "updated_at")
    return {key: iso(value) if key in times else value for key, value in row.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, dict | list | tuple):
        return json.loads(json.dumps(value, default=str))
    return str(value)
