"""Launch processes and send events from Python: ``Launcher(...).launch(definition, fields)``.

    from bureaucrat.launcher import Launcher

    with Launcher() as launcher:                       # local RabbitMQ, or amqp_url=/config=
        pid = launcher.launch("order.xml", {"order": 42})
        launcher.send_event("payment_received", {"order": 42}, process_id=pid)

The definition is checked before it is sent (``DefinitionError`` names the line). The process
id is chosen here (or given) and sent as the message id, so launching twice with one
``process_id`` starts one process. What the engine would dead-letter is refused here with
``MessageError``: a process id ``bounds.check_id`` refuses, fields that are not JSON data
(``messages.check_value``: NaN, sets, NUL, nesting...) or that set ``inst:`` properties.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

from bureaucrat.amqp import Broker, Topology
from bureaucrat.bounds import check_id
from bureaucrat.config import Config, load_config
from bureaucrat.definition import is_xml_text, parse_definition
from bureaucrat.messages import JSON_TYPE, MessageError, check_fields, check_value, dumps


def read_definition(definition_or_path: str | Path) -> str:
    """The XML of a definition given as text or as the path of a file."""
    if isinstance(definition_or_path, Path) or not is_xml_text(definition_or_path):
        return Path(definition_or_path).read_text(encoding="utf-8")
    return definition_or_path


class Launcher:
    def __init__(self, amqp_url: str | None = None, config: Config | None = None) -> None:
        self.config = config or load_config(None)
        self.amqp_url = amqp_url or self.config.amqp_url
        self._broker: Broker | None = None

    @property
    def broker(self) -> Broker:
        if self._broker is None:
            topology = Topology.from_config(self.config)
            self._broker = Broker(self.amqp_url, heartbeat=self.config.heartbeat, topology=topology)
        return self._broker

    def launch(
        self,
        definition_or_path: str | Path,
        fields: dict[str, Any] | None = None,
        process_id: str | None = None,
    ) -> str:
        """Start a process; return its id."""
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
        self._send(self.config.launch_queue, body, process_id)
        return process_id

    def send_event(
        self, name: str, data: dict[str, Any] | None = None, process_id: str | None = None
    ) -> None:
        """Publish event ``name`` to every process awaiting it, or only to ``process_id``."""
        body: dict[str, Any] = {**(data or {}), "event": name}
        if process_id is not None:
            body["process_id"] = process_id
        self._send(self.config.event_queue, body, uuid.uuid4().hex)

    def send_control(self, name: str, process_id: str, **extra: Any) -> None:
        """Ask the engine to ``terminate`` or ``retry`` a process."""
        body = {"name": name, "process_id": process_id, **extra}
        self._send(self.config.message_queue, body, uuid.uuid4().hex)

    def _send(self, queue: str, body: dict[str, Any], message_id: str) -> None:
        fields = {"content_type": JSON_TYPE, "delivery_mode": 2, "message_id": message_id}
        self.broker.publish("", queue, dumps(body), fields)

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
