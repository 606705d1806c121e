"""``bureaucratctl schedule ...``: add, list, show, pause, resume, delete and trigger schedules.

``list`` and ``show`` read the database; the others send a ``schedule`` control message to the
engine (``Launcher.schedule_*``), which applies it in order with everything else.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bureaucrat.config import Config
from bureaucrat.errors import BureaucratError, DefinitionError

if TYPE_CHECKING:  # the store (SQLAlchemy) is imported by the commands that read it, as in ctl
    from bureaucrat.store import ScheduleRecord

TIMING_HELP = """\
timing (exactly one):
  --cron "EXPR"    a cron expression: minute hour day month weekday, and an optional sixth
                   field for seconds ("0 6 * * mon-fri", "*/10 * * * * 30"); in --tz
  --every DURATION a fixed interval: 90, 30s, 5m, 1h30m, 2d (the first occurrence one
                   interval from now)
  --at TIME        once, at an ISO 8601 time (2026-12-24T18:00, in --tz unless it has an
                   offset)

Each occurrence is launched once, as process <NAME>@<due time in UTC, ISO 8601>, by whichever
daemon claims it. Adding a schedule under a name that exists replaces it.
"""


def add_schedule_parser(sub: Any) -> None:
    """Register ``schedule`` and its subcommands on ``bureaucratctl``'s subparsers."""
    schedule = sub.add_parser(
        "schedule",
        help="launch processes on a cron expression, an interval or a date",
        description="Manage schedules: processes launched on a cron expression (with a time "
        "zone), a fixed interval or one date, by whichever daemon claims them.",
    )
    commands = schedule.add_subparsers(dest="schedule_command", metavar="SUBCOMMAND")
    commands.required = True

    add = commands.add_parser(
        "add",
        help="add or replace a schedule",
        description="Add a schedule that launches the definition in FILE, or replace the "
        "schedule of that name.",
        epilog=TIMING_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add.add_argument("name", metavar="NAME", help="the schedule's name (up to 200 bytes)")
    add.add_argument("file", metavar="FILE", type=Path, help="the process definition (XML)")
    timing = add.add_mutually_exclusive_group(required=True)
    timing.add_argument("--cron", metavar="EXPR", help="a cron expression (see below)")
    timing.add_argument("--every", metavar="DURATION", help="a fixed interval: 30s, 5m, 1h30m")
    timing.add_argument("--at", metavar="TIME", help="once, at this ISO 8601 time")
    add.add_argument(
        "--tz", metavar="ZONE", help="the time zone of --cron or --at (IANA name; default UTC)"
    )
    add.add_argument(
        "-F",
        "--field",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a field of each launch's root context (VALUE is JSON if it parses, else a string)",
    )
    add.add_argument(
        "--overlap",
        choices=("skip", "allow", "terminate-previous"),
        default="skip",
        help="when an occurrence is due while the previous one still runs: skip the new one "
        "(default), allow both, or terminate the previous one",
    )
    add.add_argument(
        "--catch-up",
        choices=("none", "one", "all"),
        default="one",
        help="occurrences missed while no daemon ran (or the schedule was paused): launch none, "
        "the latest one (default), or all of them",
    )

    commands.add_parser("list", help="list the schedules and when they are due next")
    show = commands.add_parser("show", help="show a schedule: timing, policies, last occurrence")
    show.add_argument("name", metavar="NAME")
    show.add_argument("--json", action="store_true", help="print JSON")
    for name, text in (
        ("pause", "launch nothing more on a schedule until it is resumed"),
        ("resume", "resume a paused schedule (the catch-up policy decides what it missed)"),
        ("delete", "delete a schedule (the processes it launched are left alone)"),
        ("trigger", "launch one occurrence of a schedule now, outside its timing"),
    ):
        command = commands.add_parser(name, help=text, description=text[0].upper() + text[1:])
        command.add_argument("name", metavar="NAME")


def cmd_schedule(args: argparse.Namespace, config: Config) -> int:
    command = args.schedule_command
    if command == "add":
        return _add(args, config)
    if command == "list":
        return _list(config)
    if command == "show":
        return _show(args, config)
    return _operate(command, args.name, config)


def _add(args: argparse.Namespace, config: Config) -> int:
    from bureaucrat.ctl import _field, fail, out
    from bureaucrat.launcher import Launcher
    from bureaucrat.messages import MessageError

    try:
        fields = dict(_field(text) for text in args.field)
        with Launcher(config=config) as launcher:
            launcher.schedule_add(
                args.name,
                args.file,
                cron=args.cron,
                tz=args.tz,
                every=args.every,
                at=args.at,
                fields=fields,
                overlap=args.overlap,
                catch_up=args.catch_up,
            )
    except OSError as error:
        return fail(f"{args.file}: cannot read: {error.strerror}")
    except DefinitionError as error:
        return fail(f"{args.file}:{error.line or 0}: {error.problem}")
    except MessageError as error:  # a timing, name or fields the engine would refuse
        print(f"bureaucratctl: schedule add: {error}", file=sys.stderr)
        return 2
    out(f"schedule {args.name} sent")
    return 0


def _operate(command: str, name: str, config: Config) -> int:
    from bureaucrat.ctl import out
    from bureaucrat.launcher import Launcher

    if _read(config, name) is None:
        raise BureaucratError(f"no schedule {name}")
    with Launcher(config=config) as launcher:
        getattr(launcher, f"schedule_{command}")(name)
    out(f"schedule {command} sent for {name}")
    return 0


def _read(config: Config, name: str | None = None) -> Any:
    from bureaucrat.ctl import _store

    store = _store(config)
    try:
        return store.list_schedules() if name is None else store.schedule(name)
    finally:
        store.close()


def state_of(record: ScheduleRecord) -> str:
    """``paused``, ``error`` (paused by the engine: see its error), ``done`` (no occurrence
    left) or ``active``."""
    if record.error:
        return "error"
    if record.paused:
        return "paused"
    return "done" if record.next_due is None else "active"


def timing_text(record: ScheduleRecord) -> str:
    from bureaucrat.ctl import _when

    if record.kind == "cron":
        return f"cron {record.cron} ({record.timezone or 'UTC'})"
    if record.kind == "every":
        return f"every {record.interval}s"
    return f"at {_when(record.at)} UTC"


def _list(config: Config) -> int:
    from bureaucrat.ctl import _when, printable

    records: list[ScheduleRecord] = _read(config)
    print(f"{'NAME':<24} {'STATE':<7} {'NEXT DUE (UTC)':<19} {'LAUNCHED':>8}  TIMING")
    for record in records:
        print(
            f"{printable(record.name):<24} {state_of(record):<7} {_when(record.next_due):<19} "
            f"{record.launched:>8}  {printable(timing_text(record))}"
        )
    return 0


def _show(args: argparse.Namespace, config: Config) -> int:
    from bureaucrat.ctl import _when, fail, out

    record: ScheduleRecord | None = _read(config, args.name)
    if record is None:
        return fail(f"no schedule {args.name}")
    report = {
        "name": record.name,
        "state": state_of(record),
        "definition": record.definition_name,
        "definition_hash": record.definition_hash,
        "timing": timing_text(record),
        "kind": record.kind,
        "cron": record.cron,
        "timezone": record.timezone,
        "interval": record.interval,
        "at": _when(record.at) if record.at is not None else None,
        "fields": record.fields,
        "overlap": record.overlap,
        "catch_up": record.catch_up,
        "next_due": _when(record.next_due) if record.next_due is not None else None,
        "last_due": _when(record.last_due) if record.last_due is not None else None,
        "last_instance": record.last_instance_id,
        "launched": record.launched,
        "skipped": record.skipped,
        "error": record.error,
        "created": _when(record.created_at),
        "updated": _when(record.updated_at),
    }
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0
    for key in ("name", "state", "definition", "timing", "overlap", "catch_up", "next_due"):
        out(f"{key:<14} {report[key] if report[key] is not None else '-'}")
    for key in ("last_due", "last_instance", "launched", "skipped", "error", "created"):
        out(f"{key:<14} {report[key] if report[key] is not None else '-'}")
    out(f"{'fields':<14} {json.dumps(report['fields'], sort_keys=True)}")
    return 0
