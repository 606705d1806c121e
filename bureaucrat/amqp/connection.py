"""Every pika call bureaucrat makes, behind one small class; pika's errors become ours here.

``Broker`` wraps a blocking connection with two channels: one that consumes and one that
publishes in confirm mode, so a publish returns only once RabbitMQ has taken the message (and
raises ``PublishError`` if it was refused or could not be routed). The topology is declared as
data (``bureaucrat.amqp.topology``), idempotently, on every connection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions as pex
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

from bureaucrat.amqp.topology import Topology
from bureaucrat.errors import BrokerError, PublishError

LOG = logging.getLogger(__name__)

RECOVERABLE = (pex.AMQPConnectionError, pex.AMQPChannelError, pex.StreamLostError, OSError)
"""pika errors after which a new connection may succeed."""


@dataclass(frozen=True)
class Delivery:
    """One message taken from a queue, as the service sees it."""

    queue: str
    body: bytes
    delivery_tag: int
    redelivered: bool
    content_type: str | None = None
    message_id: str | None = None
    correlation_id: str | None = None
    headers: Mapping[str, Any] | None = None


def properties(fields: Mapping[str, Any]) -> BasicProperties:
    """pika properties from a JSON-friendly dict (the form the outbox stores)."""
    return BasicProperties(**{k: v for k, v in fields.items() if v is not None})


class Broker:
    """A connection to RabbitMQ with a consuming and a confirming publishing channel."""

    def __init__(self, url: str, *, heartbeat: int = 60, topology: Topology | None = None):
        self.url = url
        self.topology = topology
        self._declared: set[str] = set()
        try:
            parameters = pika.URLParameters(url)
            parameters.heartbeat = heartbeat
            parameters.blocked_connection_timeout = 60
            self.connection = pika.BlockingConnection(parameters)
            self.channel: BlockingChannel = self.connection.channel()
            self.publisher: BlockingChannel = self.connection.channel()
            self.publisher.confirm_delivery()
            if topology is not None:
                topology.declare(self.channel)
        except RECOVERABLE as error:
            raise BrokerError(
                f"cannot connect to RabbitMQ at {_safe(url)}: {_describe(error)}"
            ) from None

    # publishing -------------------------------------------------------------------------------

    def ensure_queue(self, name: str) -> None:
        """Declare a durable queue once per connection (workers' queues are made on demand)."""
        if name not in self._declared:
            self._call(lambda: self.publisher.queue_declare(name, durable=True))
            self._declared.add(name)

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        fields: Mapping[str, Any],
        *,
        mandatory: bool = True,
    ) -> None:
        """Publish and wait for the broker's confirm; ``PublishError`` if it is refused (or,
        when ``mandatory``, if no queue would take it)."""
        props = properties(fields)
        try:
            self.publisher.basic_publish(exchange, routing_key, body, props, mandatory=mandatory)
        except (pex.UnroutableError, pex.NackError) as error:
            raise PublishError(
                f"RabbitMQ refused a message for {exchange or '(default)'}/{routing_key}: "
                f"{type(error).__name__}"
            ) from None
        except RECOVERABLE as error:
            raise BrokerError(f"lost RabbitMQ while publishing: {_describe(error)}") from None

    def consumers(self, queue: str) -> int | None:
        """How many consumers ``queue`` has now; None when there is no such queue."""
        channel = self._call(self.connection.channel)
        try:
            frame = channel.queue_declare(queue, passive=True)
        except pex.ChannelClosedByBroker as error:
            if error.reply_code == 404:
                return None
            raise BrokerError(f"cannot inspect queue {queue}: {_describe(error)}") from None
        except RECOVERABLE as error:
            raise BrokerError(f"lost RabbitMQ: {_describe(error)}") from None
        with suppress(*RECOVERABLE):
            channel.close()
        return int(frame.method.consumer_count)

    # consuming --------------------------------------------------------------------------------

    def consume(
        self, queues: list[str], prefetch: int, handler: Callable[[Delivery], None]
    ) -> None:
        """Deliver messages from ``queues`` to ``handler`` while ``run`` processes events."""
        self._call(lambda: self.channel.basic_qos(prefetch_count=prefetch))
        for queue in queues:
            self._call(lambda q=queue: self.channel.basic_consume(q, self._wrap(q, handler)))  # type: ignore[misc]

    def _wrap(self, queue: str, handler: Callable[[Delivery], None]) -> Any:
        def on_message(
            channel: BlockingChannel, method: Basic.Deliver, props: BasicProperties, body: bytes
        ) -> None:
            handler(
                Delivery(
                    queue=queue,
                    body=body,
                    delivery_tag=int(method.delivery_tag or 0),
                    redelivered=bool(method.redelivered),
                    content_type=props.content_type,
                    message_id=props.message_id,
                    correlation_id=props.correlation_id,
                    headers=props.headers,
                )
            )

        return on_message

    def ack(self, delivery: Delivery) -> None:
        self._call(lambda: self.channel.basic_ack(delivery.delivery_tag))

    def requeue(self, delivery: Delivery) -> None:
        self._call(lambda: self.channel.basic_nack(delivery.delivery_tag, requeue=True))

    def run(self, seconds: float) -> None:
        """Process I/O and deliver messages for up to ``seconds``."""
        self._call(lambda: self.connection.process_data_events(time_limit=seconds))

    def cancel(self) -> None:
        """Stop consuming; messages not yet delivered go back to their queues."""
        with suppress(*RECOVERABLE):
            self.channel.cancel()

    def close(self) -> None:
        try:
            if self.connection.is_open:
                self.connection.close()
        except RECOVERABLE:
            pass

    def _call(self, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except RECOVERABLE as error:
            raise BrokerError(f"lost RabbitMQ: {_describe(error)}") from None


def _describe(error: BaseException) -> str:
    text = str(error) or repr(error)
    return f"{type(error).__name__}: {text}" if text != type(error).__name__ else text


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    parsed = pika.URLParameters(url)
    return f"amqp://{parsed.host}:{parsed.port}{'/' + parsed.virtual_host}"
