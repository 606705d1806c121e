"""``bureaucratctl``: the operator's tool.

Reading commands (``list``, ``show``, ``schedule list``, ``schedule show``) read the database;
commands that change a process or a schedule (``launch``, ``terminate``, ``retry``, ``event``,
``schedule add``...) send messages to the engine through RabbitMQ,
so they take effect in the same order and with the same guarantees as everything else.

Ids, names, fault messages and reasons come from the database and from whoever sent a message:
everything printed goes through ``printable``, which escapes control characters (``\\x1b``), so
that no value can move the cursor, recolour or rewrite an operator's terminal.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bureaucrat import __version__
from bureaucrat.config import Config, find_config, load_config, with_absolute_database
from bureaucrat.errors import BureaucratError, ConfigError, DefinitionError

_UNSAFE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
"""Unicode categories escaped on output: controls (C0, DEL, C1), format characters
(bidirectional overrides, zero-width), lone surrogates, line and paragraph separators."""
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(value: object) -> str:
    """``value`` as text that is safe to print on a terminal: control characters escaped in
    Python's notation (ESC as ``\\x1b``, a newline as ``\\n``), everything else as it is."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(_escape(char) for char in text)


def _escape(char: str) -> str:
    if unicodedata.category(char) not in _UNSAFE:
        return char
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def out(line: object) -> None:
    """Print one line of output, escaped."""
    print(printable(line))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bureaucratctl",
        description="Operate the bureaucrat workflow engine.",
        epilog="Exit status: 0 on success, 1 when the command failed, 2 on bad usage.",
    )
    parser.add_argument(
        "-c",
        "--config",
        metavar="CONFIG",
        help="bureaucrat config file (default: $BUREAUCRAT_CONFIG, else "
        "/etc/bureaucrat/bureaucrat.conf, else /etc/taskqueue/config.ini, else built-in "
        "defaults, as the daemon)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    launch = sub.add_parser("launch", help="launch a process from a definition file")
    launch.add_argument("file", metavar="FILE", type=Path)
    launch.add_argument(
        "-F",
        "--field",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a field of the root context (VALUE is JSON if it parses, else a string)",
    )
    launch.add_argument("--id", help="the process id (default: a new one)")

    listing = sub.add_parser("list", help="list process instances, oldest first")
    listing.add_argument(
        "--status",
        help="running, paused, suspended, completed, faulted, terminated or broken",
    )
    listing.add_argument("--name", help="only processes of this definition name")
    listing.add_argument(
        "--since", type=_timestamp, metavar="TIME", help="created at or after TIME (ISO 8601, UTC)"
    )
    listing.add_argument(
        "--until", type=_timestamp, metavar="TIME", help="created before TIME (ISO 8601, UTC)"
    )
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--after", metavar="ID", help="continue after this instance id")

    show = sub.add_parser("show", help="show a process: status, context, fault, journal")
    show.add_argument("id", metavar="ID")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.add_argument(
        "--tree",
        action="store_true",
        help="also the activity tree, each activity with its state (coloured on a terminal "
        "unless NO_COLOR is set)",
    )

    terminate = sub.add_parser("terminate", help="terminate a process and what it waits on")
    terminate.add_argument("id", metavar="ID")
    terminate.add_argument("--reason", default="", help="why, for the journal")
    retry = sub.add_parser("retry", help="re-dispatch the failed actions of a process")
    retry.add_argument("id", metavar="ID")
    retry.add_argument("--activity", help="only this activity id")
    _operations(sub)

    event = sub.add_parser("event", help="send an event")
    event.add_argument("name", metavar="NAME")
    event.add_argument("--data", default="{}", help="the event's data, a JSON object")
    event.add_argument("--process", metavar="ID", help="only to this process")

    validate = sub.add_parser(
        "validate",
        help="check a definition: every problem and warning with its line (exit 0: valid)",
    )
    validate.add_argument("file", metavar="FILE", type=Path)

    health = sub.add_parser(
        "health",
        help="check RabbitMQ, the database and that queues have consumers (exit 0: healthy)",
        description="Exit 0 when RabbitMQ answers, each QUEUE has a consumer and the database "
        "answers; 1 otherwise, saying what is wrong. For container and monitoring checks.",
    )
    health.add_argument(
        "queues",
        nargs="*",
        metavar="QUEUE",
        help="queues that must have a consumer (default: the engine's launch, message and "
        "event queues, i.e. a daemon is serving)",
    )
    health.add_argument(
        "--no-database", action="store_true", help="do not check the database (for workers)"
    )

    from bureaucrat.ctl_schedules import add_schedule_parser

    add_schedule_parser(sub)

    db = sub.add_parser("db", help="database administration")
    db_sub = db.add_subparsers(dest="db_command", metavar="SUBCOMMAND", required=True)
    db_sub.add_parser("upgrade", help="create or upgrade the schema to this version")
    return parser


def _timestamp(text: str) -> float:
    """Seconds since the epoch from an ISO 8601 date or time (UTC unless it says otherwise)."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time (e.g. 2026-11-22 or 2026-11-22T09:30)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def fail(message: str, status: int = 1) -> int:
    print(f"bureaucratctl: {printable(message)}", file=sys.stderr)
    return status


def cmd_validate(args: argparse.Namespace, config: Config) -> int:
    """Every problem of the definition, each as ``FILE:LINE: problem`` (exit 1); or its warnings,
    each as ``FILE:LINE: warning: ...``, and ``FILE: valid`` (exit 0)."""
    from bureaucrat.definition import InvalidDefinitionError, parse_definition

    path: Path = args.file
    try:
        definition = parse_definition(path.read_bytes())
    except OSError as error:
        return fail(f"{path}: cannot read: {error.strerror}")
    except DefinitionError as error:
        problems = (
            error.problems
            if isinstance(error, InvalidDefinitionError)
            else ((error.line, error.problem),)
        )
        for line, problem in problems:
            print(printable(f"{path}:{line or 0}: {problem}"), file=sys.stderr)
        return 1
    for warning in definition.warnings:
        print(printable(f"{path}:{warning.line}: warning: {warning.problem}"), file=sys.stderr)
    count = len(definition.activities) - 1
    out(f"{path}: valid ({count} {'activity' if count == 1 else 'activities'})")
    return 0


def _operations(sub: Any) -> None:
    """The commands that steer one process (README, "Operating processes")."""
    value_help = "KEY=VALUE: set property KEY (VALUE is JSON if it parses, else a string)"
    pause = sub.add_parser(
        "pause",
        help="pause a running process: nothing new is dispatched until resume",
        description="Pause a running process. Nothing new is dispatched; answers, events and "
        "timers that arrive meanwhile are kept, in order, and applied on resume.",
    )
    pause.add_argument("id", metavar="ID")
    pause.add_argument("--reason", default="", help="why, for the journal")
    resume = sub.add_parser(
        "resume",
        help="resume a paused process, or a suspended one (its faulting activity runs again)",
        description="Resume a paused process (what arrived meanwhile is applied in order), or "
        "one suspended at an incident: the activity that faulted runs again, with the context "
        "as it is now (fix it first with 'set').",
    )
    resume.add_argument("id", metavar="ID")
    set_ = sub.add_parser(
        "set",
        help="set context values of a running, paused or suspended process",
        description="Set context properties, each where it is declared (the innermost block "
        "in progress that declares it), else in the root context; journalled with the old "
        "and new values. Refused on a finished process.",
    )
    set_.add_argument("id", metavar="ID")
    set_.add_argument("values", nargs="+", metavar="KEY=VALUE", help=value_help)
    rerun = sub.add_parser(
        "rerun",
        help="run a process again from an activity, cancelling what is pending",
        description="Run a process (in any status but broken) again from ACTIVITY: what it "
        "waits on is cancelled (workitems, timers, events, subprocesses), the activity starts "
        "afresh and the process goes on from there, with its context kept and --set values "
        "applied. ACTIVITY is an activity id as 'show' prints it (<id>_0_2) or its path (0_2).",
    )
    rerun.add_argument("id", metavar="ID")
    rerun.add_argument("--from", dest="activity", required=True, metavar="ACTIVITY")
    rerun.add_argument(
        "--set", dest="values", action="append", default=[], metavar="KEY=VALUE", help=value_help
    )
    restart = sub.add_parser(
        "restart",
        help="run a process again from the beginning with the fields it was launched with",
        description="Run a process (in any status but broken) again from the beginning: what "
        "it waits on is cancelled and its context is made afresh from the definition and the "
        "fields it was launched with.",
    )
    restart.add_argument("id", metavar="ID")


def _field(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise BureaucratError(f"-F {text!r}: expected KEY=VALUE")
    try:
        return key, json.loads(value)
    except RecursionError:
        from bureaucrat.messages import MessageError

        raise MessageError(f"-F {key}: the value nests too deeply") from None
    except ValueError:
        return key, value


def cmd_launch(args: argparse.Namespace, config: Config) -> int:
    from bureaucrat.launcher import Launcher
    from bureaucrat.messages import MessageError

    try:
        fields = dict(_field(text) for text in args.field)
        with Launcher(config=config) as launcher:
            process_id = launcher.launch(args.file, fields, process_id=args.id)
    except OSError as error:
        return fail(f"{args.file}: cannot read: {error.strerror}")
    except DefinitionError as error:
        return fail(f"{args.file}:{error.line or 0}: {error.problem}")
    except MessageError as error:  # an id or fields the engine would refuse: bad usage
        print(f"bureaucratctl: launch: {error}", file=sys.stderr)
        return 2
    print(process_id)
    return 0


def _control(name: str, process_id: str, config: Config, **extra: Any) -> None:
    from bureaucrat.launcher import Launcher

    with Launcher(config=config) as launcher:
        launcher.send_control(name, process_id, **extra)


def cmd_terminate(args: argparse.Namespace, config: Config) -> int:
    _require_instance(args.id, config)
    _control("terminate", args.id, config, reason=args.reason or "bureaucratctl terminate")
    out(f"terminate sent to {args.id}")
    return 0


_LIVE = ("running", "paused", "suspended")


def cmd_pause(args: argparse.Namespace, config: Config) -> int:
    _require_instance(args.id, config, ("running",), "pause")
    _control("pause", args.id, config, reason=args.reason or "bureaucratctl pause")
    out(f"pause sent to {args.id}")
    return 0


def cmd_resume(args: argparse.Namespace, config: Config) -> int:
    _require_instance(args.id, config, ("paused", "suspended"), "resume")
    _control("resume", args.id, config)
    out(f"resume sent to {args.id}")
    return 0


def cmd_set(args: argparse.Namespace, config: Config) -> int:
    values = dict(_field(text) for text in args.values)
    _require_instance(args.id, config, _LIVE, "set values of")
    _control("set", args.id, config, values=values)
    out(f"set {', '.join(sorted(values))} sent to {args.id}")
    return 0


def cmd_rerun(args: argparse.Namespace, config: Config) -> int:
    from bureaucrat.engine.state import activity_id

    values = dict(_field(text) for text in args.values)
    activity = args.activity
    if activity != args.id and not activity.startswith(args.id + "_"):
        activity = activity_id(args.id, activity)  # a path: 0_2
    _require_instance(args.id, config, _NOT_BROKEN, "rerun")
    _control("rerun", args.id, config, activity=activity, values=values)
    out(f"rerun from {activity} sent to {args.id}")
    return 0


def cmd_restart(args: argparse.Namespace, config: Config) -> int:
    _require_instance(args.id, config, _NOT_BROKEN, "restart")
    _control("restart", args.id, config)
    out(f"restart sent to {args.id}")
    return 0


_NOT_BROKEN = (*_LIVE, "completed", "faulted", "terminated")


def cmd_retry(args: argparse.Namespace, config: Config) -> int:
    _require_instance(args.id, config)
    _control("retry", args.id, config, activity=args.activity)
    out(f"retry sent to {args.id}")
    return 0


def cmd_event(args: argparse.Namespace, config: Config) -> int:
    from bureaucrat.launcher import Launcher

    try:
        data = json.loads(args.data)
    except ValueError as error:
        return fail(f"--data is not valid JSON: {error}")
    if not isinstance(data, dict):
        return fail("--data must be a JSON object")
    with Launcher(config=config) as launcher:
        launcher.send_event(args.name, data, process_id=args.process)
    out(f"event {args.name} sent")
    return 0


def _store(config: Config) -> Any:
    from bureaucrat.store import Store

    return Store(config.database_url)


def _require_instance(
    process_id: str,
    config: Config,
    statuses: tuple[str, ...] | None = None,
    doing: str = "",
) -> None:
    """The process must exist (and be in one of ``statuses``), else a clear error."""
    store = _store(config)
    try:
        record = store.instance(process_id)
    finally:
        store.close()
    if record is None:
        raise BureaucratError(f"no process {printable(process_id)}")
    if statuses is not None and record.status not in statuses:
        raise BureaucratError(
            f"cannot {doing} process {printable(process_id)}: it is {record.status} "
            f"(only a process that is {' or '.join(statuses)})"
        )


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def cmd_list(args: argparse.Namespace, config: Config) -> int:
    store = _store(config)
    try:
        rows = store.list_instances(
            status=args.status,
            name=args.name,
            since=args.since,
            until=args.until,
            limit=args.limit,
            after=args.after,
        )
    finally:
        store.close()
    print(f"{'ID':<36} {'STATUS':<11} {'NAME':<20} {'CREATED':<19} UPDATED")
    for row in rows:
        name = printable(row.name or "-")[:20]
        print(
            f"{printable(row.id):<36} {printable(row.status):<11} {name:<20} "
            f"{_when(row.created_at):<19} {_when(row.updated_at)}"
        )
    return 0


def cmd_show(args: argparse.Namespace, config: Config) -> int:
    store = _store(config)
    try:
        record = store.instance(args.id)
        if record is None:
            return fail(f"no process {args.id}")
        journal = store.journal(args.id)
        pending = store.pending_workitems(args.id)
        tree = _tree(store, record, journal) if args.tree else None
    finally:
        store.close()
    state = record.state or {}
    report = {
        "id": record.id,
        "name": record.name,
        "status": record.status,
        "parent": record.parent_id,
        "created": _when(record.created_at),
        "updated": _when(record.updated_at),
        "context": state.get("scopes", {}).get("", {}),
        "fault": _public_fault(state.get("fault")),
        "incident": _incident(state.get("incident")),
        "held": len(state.get("held") or []),
        "error": record.error,
        "pending_workitems": [
            {"id": w.id, "activity": w.activity, "participant": w.participant} for w in pending
        ],
        "journal": [
            {"at": _when(e.at), "activity": e.activity, "kind": e.kind, "details": e.details}
            for e in journal
        ],
    }
    if tree is not None:
        report["tree"] = tree if isinstance(tree, str) else tree.to_json()
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0
    _print_report(report)
    if isinstance(tree, str):
        out(f"tree     {tree}")
    elif tree is not None:
        from bureaucrat.tree import render, wants_colour

        print("tree")
        for line in render(tree, colour=wants_colour(sys.stdout)):
            print(INDENT + line)  # escaped by render, colour codes excepted
    return 0


def _incident(incident: Any) -> Any:
    """What a suspended process's incident says: its fault and the activity that raised it."""
    if isinstance(incident, dict):
        return {key: incident.get(key) for key in ("code", "message", "activity")}
    return None


INDENT = "  "


def _tree(store: Any, record: Any, journal: list[Any]) -> Any:
    """The instance's activity tree (``describe``), or why there is none."""
    from bureaucrat.engine.describe import describe

    if not isinstance(record.state, dict) or not record.state:
        return "unavailable: the instance has no readable state"
    try:
        definition = store.definition(record.definition_hash)
    except (BureaucratError, ValueError) as error:
        return f"unavailable: {error}"
    return describe(definition, record.state, [(e.activity, e.kind, e.details) for e in journal])


def _public_fault(fault: Any) -> Any:
    if isinstance(fault, dict):
        return {"code": fault.get("code"), "message": fault.get("message")}
    return None


def _print_report(report: dict[str, Any]) -> None:
    out(f"process  {report['id']} ({report['name'] or 'unnamed'})")
    out(f"status   {report['status']}")
    out(f"created  {report['created']}   updated {report['updated']}")
    if report["parent"]:
        out(f"parent   {report['parent']}")
    if report["fault"]:
        out(f"fault    {report['fault']['code']}: {report['fault']['message']}")
    if report["incident"]:
        incident = report["incident"]
        out(
            f"incident {incident['code']}: {incident['message']} (at {incident['activity']}; "
            "fix with 'set', then 'resume', 'rerun' or 'terminate')"
        )
    if report["held"]:
        out(f"held     {report['held']} messages, applied on resume")
    if report["error"]:
        out(f"error    {report['error']}")
    out("context  " + json.dumps(report["context"], sort_keys=True))
    for item in report["pending_workitems"]:
        out(f"waiting  {item['participant']} ({item['activity']}, workitem {item['id']})")
    out("journal")
    for entry in report["journal"]:
        details = " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(entry["details"].items()))
        out(f"  {entry['at']}  {entry['kind']:<10} {entry['activity']}  {details}".rstrip())


def cmd_health(args: argparse.Namespace, config: Config) -> int:
    from bureaucrat.amqp import Broker

    queues = args.queues or [config.launch_queue, config.message_queue, config.event_queue]
    problems: list[str] = []
    broker = Broker(config.amqp_url, heartbeat=config.heartbeat)
    try:
        for queue in queues:
            consumers = broker.consumers(queue)
            if consumers is None:
                problems.append(f"queue {queue} does not exist")
            elif consumers == 0:
                problems.append(f"queue {queue} has no consumer")
    finally:
        broker.close()
    if not args.no_database:
        store = _store(config)
        try:
            counts = store.counts_by_status()
        finally:
            store.close()
        out("database: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "empty"))
    if problems:
        return fail("; ".join(problems))
    out(f"healthy: {', '.join(queues)} served")
    return 0


def cmd_db(args: argparse.Namespace, config: Config) -> int:
    from bureaucrat.store import upgrade

    upgrade(config.database_url)
    out(f"database schema is up to date ({config.database_url.split('@')[-1]})")
    return 0


def cmd_schedule(args: argparse.Namespace, config: Config) -> int:
    from bureaucrat.ctl_schedules import cmd_schedule

    return cmd_schedule(args, config)


COMMANDS: dict[str, Callable[[argparse.Namespace, Config], int]] = {
    "launch": cmd_launch,
    "list": cmd_list,
    "show": cmd_show,
    "terminate": cmd_terminate,
    "retry": cmd_retry,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "set": cmd_set,
    "rerun": cmd_rerun,
    "restart": cmd_restart,
    "event": cmd_event,
    "validate": cmd_validate,
    "health": cmd_health,
    "db": cmd_db,
    "schedule": cmd_schedule,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = with_absolute_database(load_config(args.config or find_config()))
        return COMMANDS[args.command](args, config)
    except ConfigError as error:  # a setting, or queues RabbitMQ holds declared otherwise
        return fail(str(error), status=2)
    except BureaucratError as error:
        return fail(str(error))


if __name__ == "__main__":
    sys.exit(main())
