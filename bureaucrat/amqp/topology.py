"""The exchanges, queues and bindings bureaucrat uses, declared as data and idempotently.

Queues (durable): launches, responses and control messages, events, and the dead letters.
Publishing to the default exchange with a queue's name as routing key works, as the original's
tools expect; a direct exchange (``bureaucrat``) routes the same keys to the first three queues,
and a topic exchange carries notifications of finished processes (``process.<status>``).

Queues are classic, or quorum queues (``queue_type = quorum``) for RabbitMQ clusters. A quorum
queue has a delivery limit (``max_redeliveries``): RabbitMQ dead-letters a message returned to
it more often than that to the dead-letter queue, itself a quorum queue that dead-letters
nothing. ``QueueArguments`` says what bureaucrat's queues (the engine's and the workers'
``worker_<participant>``) are declared with, so that every client declares them the same way;
other queues (Celery's, a taskqueue action's own ``queue``) belong to whoever consumes them and
are taken as they are. RabbitMQ refuses to redeclare a queue with other arguments (406
PRECONDITION_FAILED); ``mismatch`` turns its answer into a ``TopologyError`` that says what to do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

import pika.exceptions as pex
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from bureaucrat.config import Config
from bureaucrat.errors import TopologyError

PRECONDITION_FAILED = 406


@dataclass(frozen=True)
class QueueArguments:
    """The arguments every queue is declared with, from ``queue_type`` and ``max_redeliveries``."""

    queue_type: str = "classic"
    delivery_limit: int = 5
    dead_letter_queue: str = "bureaucrat.dead"
    engine_queues: frozenset[str] = frozenset()
    worker_queue_prefix: str | None = None

    @classmethod
    def from_config(cls, config: Config) -> QueueArguments:
        return cls(
            queue_type=config.queue_type,
            delivery_limit=config.max_redeliveries,
            dead_letter_queue=config.dead_letter_queue,
            engine_queues=frozenset(
                (config.launch_queue, config.message_queue, config.event_queue)
            ),
            worker_queue_prefix=config.worker_queue_prefix,
        )

    def owns(self, queue: str) -> bool:
        """Whether ``queue`` is one of bureaucrat's (declared with these arguments) rather than
        a queue of Celery's or of a worker that declares it itself."""
        prefix = self.worker_queue_prefix
        return (
            queue == self.dead_letter_queue
            or queue in self.engine_queues
            or (prefix is not None and queue.startswith(prefix))
        )

    def __call__(self, queue: str) -> dict[str, Any] | None:
        """The ``arguments`` of ``queue_declare`` for ``queue`` (None for a classic queue)."""
        if self.queue_type == "classic":
            return None
        if queue == self.dead_letter_queue:
            return {"x-queue-type": self.queue_type}
        return {
            "x-queue-type": self.queue_type,
            "x-delivery-limit": self.delivery_limit,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.dead_letter_queue,
        }

    def declare(self, channel: BlockingChannel, queue: str) -> None:
        """Declare durable ``queue``; ``TopologyError`` if it exists with other arguments (the
        broker then closes ``channel``)."""
        try:
            channel.queue_declare(queue, durable=True, arguments=self(queue))
        except pex.ChannelClosedByBroker as error:
            if error.reply_code != PRECONDITION_FAILED:
                raise
            raise self._refusal(channel.connection, queue, error.reply_text) from None

    def _refusal(self, connection: BlockingConnection, queue: str, reply: str) -> TopologyError:
        named = _argument(reply) in ("x-queue-type", "x-delivery-limit")
        if not named and self._is_other_type(connection, queue):
            return TopologyError(_type_mismatch(queue, self.other_type, self.queue_type))
        return mismatch("queue", queue, reply)

    @property
    def other_type(self) -> str:
        return "classic" if self.queue_type == "quorum" else "quorum"

    def _is_other_type(self, connection: BlockingConnection, queue: str) -> bool:
        """Whether ``queue`` is what bureaucrat declares under the other ``queue_type``.

        RabbitMQ compares the dead-lettering arguments before the queue type, so a classic
        queue where a quorum queue is expected (or the reverse) is refused for its
        dead-lettering; declaring it as the other type tells what it is."""
        other = replace(self, queue_type=self.other_type)
        channel = connection.channel()
        try:
            channel.queue_declare(queue, durable=True, arguments=other(queue))
        except pex.ChannelClosedByBroker as error:
            return _argument(error.reply_text) == "x-delivery-limit"  # the type is the other's
        if channel.is_open:
            channel.close()
        return True


def queue_arguments(config: Config, queue: str) -> dict[str, Any] | None:
    """What ``queue`` is declared with under ``config`` (for clients that declare it
    themselves: pass it as ``arguments`` to ``queue_declare``)."""
    return QueueArguments.from_config(config)(queue)


@dataclass(frozen=True)
class Topology:
    exchange: str
    notifications: str
    routed_queues: tuple[str, ...]
    dead_letter_queue: str
    queues: QueueArguments = field(default_factory=QueueArguments)

    @classmethod
    def from_config(cls, config: Config) -> Topology:
        return cls(
            exchange=config.exchange,
            notifications=config.notifications_exchange,
            routed_queues=(config.launch_queue, config.message_queue, config.event_queue),
            dead_letter_queue=config.dead_letter_queue,
            queues=QueueArguments.from_config(config),
        )

    def declare(self, channel: BlockingChannel) -> None:
        """Declare everything; ``TopologyError`` if something exists with other arguments."""
        for name, kind in ((self.exchange, "direct"), (self.notifications, "topic")):
            try:
                channel.exchange_declare(name, exchange_type=kind, durable=True)
            except pex.ChannelClosedByBroker as error:
                if error.reply_code == PRECONDITION_FAILED:
                    raise mismatch("exchange", name, error.reply_text) from None
                raise
        self.queues.declare(channel, self.dead_letter_queue)
        for queue in self.routed_queues:
            self.queues.declare(channel, queue)
            channel.queue_bind(queue, self.exchange, routing_key=queue)


_INEQUIVALENT = re.compile(r"inequivalent arg '([^']+)'.*received (.+) but current is (.+)$")


def mismatch(kind: str, name: str, reply: str) -> TopologyError:
    """The error for RabbitMQ's refusal (``reply``) to redeclare exchange or queue ``name``."""
    found = _INEQUIVALENT.search(reply)
    argument, received, current = found.groups() if found else ("", "", "")
    if kind == "queue" and argument == "x-queue-type":
        wanted, actual = (_value(text, "classic") for text in (received, current))
        return TopologyError(_type_mismatch(name, actual, wanted))
    if kind == "queue" and argument == "x-delivery-limit" and current == "none":
        return TopologyError(
            f"queue {name} exists without a delivery limit but max_redeliveries = "
            f"{_value(received)}: delete it (after moving its messages)"
        )
    if kind == "queue" and argument == "x-delivery-limit":
        return TopologyError(
            f"queue {name} exists with another delivery limit ({_value(current)}) than "
            f"max_redeliveries = {_value(received)}: delete it (after moving its messages) "
            f"or set max_redeliveries = {_value(current)}"
        )
    if kind == "queue":
        return TopologyError(
            f"queue {name} exists with other arguments than bureaucrat declares it with "
            f"(RabbitMQ: {reply}): delete it (after moving its messages) or name another queue "
            "in the config"
        )
    return TopologyError(
        f"exchange {name} exists with another type or other arguments than bureaucrat "
        f"declares it with (RabbitMQ: {reply}): delete it or name another exchange in the config"
    )


def _type_mismatch(queue: str, actual: str, wanted: str) -> str:
    return (
        f"queue {queue} exists as a {actual} queue but queue_type = {wanted}: delete it "
        f"(after moving its messages) or set queue_type = {actual}"
    )


def _argument(reply: str) -> str | None:
    """The argument RabbitMQ names in a refusal to redeclare (``inequivalent arg 'x-...'``)."""
    found = _INEQUIVALENT.search(reply)
    return found.group(1) if found else None


def _value(text: str, absent: str = "none") -> str:
    """``'5'`` or ``the value '5' of type 'signedint'`` (RabbitMQ's words) -> ``5``; ``none``
    (the argument is not set) -> ``absent``."""
    if text == "none":
        return absent
    quoted = re.findall(r"'([^']*)'", text)
    return quoted[0] if quoted else text
