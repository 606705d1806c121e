"""Every pika call bureaucrat makes, behind one small class; pika's errors become ours here.

``Broker`` wraps a blocking connection with two channels: one that consumes and one that
publishes in confirm mode, so a publish returns only once RabbitMQ has taken the message (and
raises ``PublishError`` if it was refused or could not be routed). The topology is declared as
data (``bureaucrat.amqp.topology``), idempotently, on every connection, and so are the
workers' queues, declared on demand with the same ``QueueArguments``. A queue or exchange of
bureaucrat's that exists with other arguments is a ``TopologyError`` (an operator must act), not
a ``BrokerError``. Other queues (Celery's) are taken as they exist, and made classic if missing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions as pex
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

from bureaucrat.amqp.pipeline import Pipeline
from bureaucrat.amqp.topology import QueueArguments, Topology
from bureaucrat.errors import BrokerError, PublishError, TopologyError

LOG = logging.getLogger(__name__)

RECOVERABLE = (pex.AMQPConnectionError, pex.AMQPChannelError, pex.StreamLostError, OSError)
"""pika errors after which a new connection may succeed."""
NOT_FOUND = 404


class _Probing(logging.Filter):
    """Silences pika's warning that the broker closed a channel while this thread looks for a
    queue that may not exist (a passive declare): not finding it is an answer, not a fault."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.local, "active", False)

    @contextmanager
    def active(self) -> Iterator[None]:
        self.local.active = True
        try:
            yield
        finally:
            self.local.active = False


_PROBING = _Probing()
logging.getLogger("pika.channel").addFilter(_PROBING)


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
    """A connection to RabbitMQ with a consuming and a confirming publishing channel.

    ``topology`` is declared on connecting. ``queues`` (default: the topology's) says how
    ``ensure_queue`` declares bureaucrat's own queues; without either, or for a queue that is
    not bureaucrat's, ``ensure_queue`` takes the queue as it exists, and declares it as a
    durable classic queue if it is missing (as Celery and the original's workers do).
    """

    def __init__(
        self,
        url: str,
        *,
        heartbeat: int = 60,
        topology: Topology | None = None,
        queues: QueueArguments | None = None,
    ):
        self.url = url
        self.topology = topology
        self.queues = queues or (topology.queues if topology is not None else None)
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
        except TopologyError:
            self.close()
            raise
        except RECOVERABLE as error:
            self.close()
            raise BrokerError(
                f"cannot connect to RabbitMQ at {_safe(url)}: {_describe(error)}"
            ) from None

    # publishing -------------------------------------------------------------------------------

    def ensure_queue(self, name: str) -> None:
        """Make sure durable queue ``name`` exists, once per connection (workers' queues are
        made on demand); ``TopologyError`` if it is bureaucrat's and exists with other arguments
        than ``queues`` says.

        Declarations use a channel of their own, so a refusal leaves the others open."""
        if name in self._declared:
            return
        if self.queues is not None and self.queues.owns(name):
            with self._scratch_channel() as channel:
                self.queues.declare(channel, name)
        else:
            with self._scratch_channel() as channel:
                exists = self._exists(channel, name)
            if not exists:
                with self._scratch_channel() as channel:
                    channel.queue_declare(name, durable=True)
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
        with self._scratch_channel() as channel:
            try:
                with _PROBING.active():
                    frame = channel.queue_declare(queue, passive=True)
            except pex.ChannelClosedByBroker as error:
                if error.reply_code == NOT_FOUND:
                    return None
                raise BrokerError(f"cannot inspect queue {queue}: {_describe(error)}") from None
        return int(frame.method.consumer_count)

    def _exists(self, channel: BlockingChannel, queue: str) -> bool:
        try:
            with _PROBING.active():
                channel.queue_declare(queue, passive=True)
        except pex.ChannelClosedByBroker as error:
            if error.reply_code == NOT_FOUND:
                return False
            raise
        return True

    @contextmanager
    def _scratch_channel(self) -> Iterator[BlockingChannel]:
        """A channel for one declaration, closed after it (if the broker has not closed it);
        pika's errors in the block become ``BrokerError``."""
        channel = self._call(self.connection.channel)
        try:
            yield channel
        except RECOVERABLE as error:
            raise BrokerError(f"lost RabbitMQ: {_describe(error)}") from None
        finally:
            if channel.is_open:
                with suppress(*RECOVERABLE):
                    channel.close()

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

    def ack(self, delivery: Delivery, *, multiple: bool = False) -> None:
        """Acknowledge ``delivery`` (with ``multiple``: and every earlier one not acknowledged)."""
        self._call(lambda: self.channel.basic_ack(delivery.delivery_tag, multiple=multiple))

    def pipeline(self) -> Pipeline:
        """A channel of its own on which batches are published with pipelined confirms."""
        return self._call(lambda: Pipeline(self.connection, self.connection.channel()))  # type: ignore[no-any-return]

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
        connection = getattr(self, "connection", None)  # None when connecting failed
        try:
            if connection is not None and connection.is_open:
                connection.close()
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
