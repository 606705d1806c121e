"""Launch processes and send events from Python: ``Launcher(...).launch(definition, fields)``.

    from bureaucrat.launcher import Launcher

    with Launcher() as launcher:                       # local RabbitMQ, or amqp_url=/config=
        pid = launcher.launch("order.xml", {"order": 42})
        launcher.send_event("payment_received", {"order": 42}, process_id=pid)
        launcher.schedule_add("nightly", "sync.xml", cron="0 2 * * *", tz="Europe/Paris")

The original's call keeps working: ``Launcher({"host": ..., "user": ..., "passwd": ...,
"vhost": ..., "launcher_routing_key": ..., "launcher_exchange": ...}).launch(path, fields)``,
every key optional. ``host``, ``port``, ``user``, ``passwd`` and ``vhost`` make the broker URL;
launches are published to ``launcher_exchange`` (default: the default exchange, ``""``) with
``launcher_routing_key`` (default: the launch queue, ``bureaucrat``). Through the default exchange
the routing key is the launch queue itself, declared like the engine's own.

The definition is checked before it is sent (``DefinitionError`` names the line). The process
id is chosen here (or given) and sent as the message id, so launching twice with one
``process_id`` starts one process. What the engine would dead-letter is refused here with
``MessageError``: a process id ``bounds.check_id`` refuses, fields that are not JSON data
(``messages.check_value``: NaN, sets, NUL, nesting...) or that set ``inst:`` properties.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from bureaucrat.amqp import Broker, Topology
from bureaucrat.bounds import MAX_NAME, SHORT_STRING, check_id
from bureaucrat.config import Config, check_config, load_config, original_amqp_url
from bureaucrat.definition import is_xml_text, parse_definition
from bureaucrat.errors import ConfigError
from bureaucrat.messages import (
    JSON_TYPE,
    MessageError,
    check_control,
    check_event,
    check_fields,
    check_value,
    dumps,
)
from bureaucrat.schedules import ScheduleError, spec_of

LOG = logging.getLogger(__name__)


def read_definition(definition: str | Path | IO[str] | IO[bytes]) -> str:
    """The XML of a definition given as text, as the path of a file or as an open file."""
    if not isinstance(definition, str | Path):
        text = definition.read()
        return text.decode("utf-8-sig") if isinstance(text, bytes) else text
    if isinstance(definition, Path) or not is_xml_text(definition):
        return Path(definition).read_text(encoding="utf-8")
    return definition


ORIGINAL_KEYS = frozenset(
    {"host", "port", "user", "passwd", "vhost", "launcher_routing_key", "launcher_exchange"}
)
"""The keys of the original's ``Launcher(config)`` dict (``port`` is ours)."""


class Launcher:
    """Publishes launches, events and control messages to the engine.

    ``options`` is the original's dict (see the module docstring) or, as before, the broker
    URL; ``config`` gives the queue names and the broker URL when neither names one."""

    def __init__(
        self,
        options: Mapping[str, Any] | str | None = None,
        config: Config | None = None,
        *,
        amqp_url: str | None = None,
    ) -> None:
        config = config or load_config(None)
        exchange, routing_key = "", config.launch_queue
        if isinstance(options, str):
            amqp_url = amqp_url or options
        elif options is not None:
            config, exchange, routing_key = _original_options(options, config)
        self.config = config
        self.launch_exchange = exchange
        """Where launches go: the default exchange and the launch queue, unless the original's
        dict names an exchange (and a routing key on it)."""
        self.launch_routing_key = routing_key
        self.amqp_url = amqp_url or config.amqp_url
        self._broker: Broker | None = None

    @property
    def broker(self) -> Broker:
        if self._broker is None:
            topology = Topology.from_config(self.config)
            self._broker = Broker(self.amqp_url, heartbeat=self.config.heartbeat, topology=topology)
        return self._broker

    def launch(
        self,
        definition_or_path: str | Path | IO[str] | IO[bytes],
        fields: dict[str, Any] | None = None,
        process_id: str | None = None,
    ) -> str:
        """Start a process; return its id (the original returned nothing).

        ``definition_or_path``: the XML, the path of a file holding it, or an open file (the
        original took a path or a file). ``fields`` override the definition's root context."""
        source = read_definition(definition_or_path)
        parse_definition(source)
        if process_id is None:
            process_id = uuid.uuid4().hex
        problem = check_id(process_id, "the process id")
        if problem is not None:
            raise MessageError(problem)
        fields = {} if fields is None else fields
        if not isinstance(fields, dict):
            raise MessageError(f"fields must be a dict, not {type(fields).__name__}")
        check_value(fields, "fields", depth=1)  # as deep as in the message
        check_fields(fields, "fields")
        body = {"definition": source, "fields": fields}
        self._send(self.launch_routing_key, body, process_id, exchange=self.launch_exchange)
        return process_id

    def send_event(
        self, name: str, data: dict[str, Any] | None = None, process_id: str | None = None
    ) -> None:
        """Publish event ``name`` to every process awaiting it, or only to ``process_id``."""
        body: dict[str, Any] = {**(data or {}), "event": name}
        if process_id is not None:
            body["process_id"] = process_id
        check_value(body, "event")  # what the engine would dead-letter is refused here
        check_event(body)
        self._send(self.config.event_queue, body, uuid.uuid4().hex)

    def send_control(self, name: str, process_id: str, **extra: Any) -> None:
        """Send control message ``name`` (``terminate``, ``pause``...) about one process."""
        body = {"name": name, "process_id": process_id, **extra}
        check_control(body)
        self._send(self.config.message_queue, body, uuid.uuid4().hex)

    # operations on one process (README, "Operating processes") --------------------------------

    def terminate(self, process_id: str, reason: str = "") -> None:
        """End the process, cancelling what it waits on, its subprocesses included."""
        self.send_control("terminate", process_id, reason=reason)

    def retry(self, process_id: str, activity: str | None = None) -> None:
        """Dispatch again the actions that failed (``error``), or only the one at ``activity``."""
        self.send_control("retry", process_id, **({"activity": activity} if activity else {}))

    def pause(self, process_id: str, reason: str = "") -> None:
        """Dispatch nothing new; what arrives meanwhile is kept and applied on ``resume``."""
        self.send_control("pause", process_id, reason=reason)

    def resume(self, process_id: str) -> None:
        """Resume a paused process, or one suspended at an incident (its faulting activity runs
        again)."""
        self.send_control("resume", process_id)

    def set_context(self, process_id: str, values: Mapping[str, Any]) -> None:
        """Set context properties of a running, paused or suspended process."""
        self.send_control("set", process_id, values=dict(values))

    def rerun(
        self, process_id: str, activity: str, values: Mapping[str, Any] | None = None
    ) -> None:
        """Run the process again from ``activity`` (its id: ``<pid>_0_2``), cancelling what
        is pending, with the context kept and ``values`` set."""
        self.send_control("rerun", process_id, activity=activity, values=dict(values or {}))

    def restart(self, process_id: str) -> None:
        """Run the process again from the beginning, with the fields it was launched with."""
        self.send_control("restart", process_id)

    # schedules (README, "Schedules") -------------------------------------------------------

    def schedule_add(
        self,
        name: str,
        definition_or_path: str | Path | IO[str] | IO[bytes],
        *,
        cron: str | None = None,
        tz: str | None = None,
        every: str | int | None = None,
        at: str | dt.datetime | None = None,
        fields: dict[str, Any] | None = None,
        overlap: str = "skip",
        catch_up: str = "one",
    ) -> None:
        """Add (or replace) schedule ``name``: launch the definition with ``fields`` on a cron
        expression in time zone ``tz`` (default UTC), ``every`` interval (``"5m"``, ``"1h30m"``,
        or seconds) or once ``at`` a time (ISO 8601 text or an aware ``datetime``).

        ``overlap``: ``skip``, ``allow`` or ``terminate-previous``; ``catch_up``: ``none``,
        ``one`` or ``all``. Checked here first: ``DefinitionError``, ``ScheduleError``."""
        source = read_definition(definition_or_path)
        parse_definition(source)
        if isinstance(at, dt.datetime):
            if at.tzinfo is None:
                raise ScheduleError("at: a datetime needs a time zone (tzinfo)")
            at = at.isoformat()
        body: dict[str, Any] = {
            "action": "add",
            "schedule": name,
            "definition": source,
            "fields": {} if fields is None else fields,
            "overlap": overlap,
            "catch_up": catch_up,
        }
        for key, value in (("cron", cron), ("tz", tz), ("every", every), ("at", at)):
            if value is not None:
                body[key] = value
        timing = spec_of(body).timing
        if timing.at is not None and timing.at < time.time():
            raise ScheduleError(f"at: {at} is in the past")
        self._schedule_control(body)

    def schedule_pause(self, name: str) -> None:
        """Launch nothing more on schedule ``name`` until it is resumed."""
        self._schedule_control({"action": "pause", "schedule": name})

    def schedule_resume(self, name: str) -> None:
        """Resume schedule ``name``; what it missed meanwhile is up to its catch-up policy."""
        self._schedule_control({"action": "resume", "schedule": name})

    def schedule_delete(self, name: str) -> None:
        """Delete schedule ``name`` (the processes it launched are left alone)."""
        self._schedule_control({"action": "delete", "schedule": name})

    def schedule_trigger(self, name: str) -> None:
        """Launch one occurrence of schedule ``name`` now, outside its timing."""
        self._schedule_control({"action": "trigger", "schedule": name})

    def _schedule_control(self, body: dict[str, Any]) -> None:
        message = {"name": "schedule", **body}
        check_control(message)
        self._send(self.config.message_queue, message, uuid.uuid4().hex)

    def _send(
        self, routing_key: str, body: dict[str, Any], message_id: str, *, exchange: str = ""
    ) -> None:
        fields = {"content_type": JSON_TYPE, "delivery_mode": 2, "message_id": message_id}
        self.broker.publish(exchange, routing_key, dumps(body), fields)

    def close(self) -> None:
        if self._broker is not None:
            self._broker.close()
            self._broker = None

    def __enter__(self) -> Launcher:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


def _original_options(options: Mapping[str, Any], config: Config) -> tuple[Config, str, str]:
    """``config`` with the broker URL and launch queue the original's dict names, the exchange
    launches go to and their routing key; ``ConfigError`` for a value that cannot be used."""
    unknown = sorted(str(key) for key in options if key not in ORIGINAL_KEYS)
    if unknown:
        LOG.warning("Launcher: %s not used and ignored", ", ".join(unknown))
    texts: dict[str, str] = {}
    for key in ORIGINAL_KEYS & options.keys():
        value = options[key]
        if key == "port" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise ConfigError(f"Launcher: {key!r} must be a string, not {type(value).__name__}")
        texts[key] = value
    where: dict[str, str] = {}
    amqp_url, launch_queue = config.amqp_url, config.launch_queue
    if {"host", "port", "user", "passwd", "vhost"} & texts.keys():
        amqp_url = original_amqp_url(texts, "Launcher:")
        where["amqp_url"] = "Launcher: host, port, user, passwd, vhost"
    exchange = texts.get("launcher_exchange", "")
    routing_key = texts.get("launcher_routing_key", "") or config.launch_queue
    if exchange:  # the routing key is one on that exchange, not a queue of ours
        for key, value, limit in (
            ("launcher_exchange", exchange, MAX_NAME),
            ("launcher_routing_key", routing_key, SHORT_STRING),
        ):
            problem = check_id(value, key, limit)
            if problem is not None:
                raise ConfigError(f"Launcher: {problem}")
    else:
        launch_queue = routing_key
        where["launch_queue"] = "Launcher: launcher_routing_key"
    changed = replace(config, amqp_url=amqp_url, launch_queue=launch_queue)
    return (check_config(changed, where) if where else config), exchange, routing_key
