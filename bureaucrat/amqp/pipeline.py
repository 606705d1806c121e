"""Publishing many messages with one wait for the broker's confirms (pipelined confirms).

pika's blocking channel in confirm mode waits for each message's confirm before the next one is
sent: one network round trip per message. A ``Pipeline`` sends a whole batch, then processes
I/O until RabbitMQ has confirmed (or refused) every message of it: one round trip per batch,
with the same guarantee per message. It drives the blocking channel's underlying asynchronous
channel, the way the blocking channel itself does.

The outcome of each message is ``None`` (RabbitMQ took it) or the reason it was refused: a nack,
a mandatory message that no queue would take (returned), or one that pika cannot encode (a
short string over 255 bytes). A lost connection is a ``BrokerError`` for the whole batch: which
of its messages arrived is unknown, so all of them are published again later (their ids are
stable, so that is harmless).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pika.exceptions as pex
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.spec import Basic, BasicProperties

from bureaucrat.errors import BrokerError

CONFIRM_TIMEOUT = 60.0
"""Seconds to wait for the confirms of one batch before the connection is taken for lost."""


@dataclass(frozen=True, slots=True)
class Publication:
    """One message to publish: where to, what, and with which properties."""

    exchange: str
    routing_key: str
    body: bytes
    properties: BasicProperties
    mandatory: bool = True


class Pipeline:
    """A confirming channel on which batches of messages are published and confirmed at once."""

    def __init__(self, connection: BlockingConnection, channel: BlockingChannel) -> None:
        self.connection = connection
        self._impl: Any = channel._impl  # the asynchronous channel under the blocking one
        self._sent = 0  # delivery tags: the n-th message published on the channel is tag n
        self._unconfirmed: set[int] = set()  # tags published and not yet confirmed
        self._confirmed: dict[int, bool] = {}  # tag -> acked (True) or nacked (False)
        self._returned: set[str] = set()  # message ids returned as unroutable
        selected: list[bool] = []
        self._impl.confirm_delivery(
            ack_nack_callback=self._on_confirm, callback=lambda _frame: selected.append(True)
        )
        self._impl.add_on_return_callback(self._on_return)
        self._wait(lambda: bool(selected), "the confirm mode")

    def publish(self, messages: Sequence[Publication]) -> list[str | None]:
        """Publish ``messages`` and wait for their confirms; per message, why it was refused,
        or None when RabbitMQ took it. ``BrokerError`` when the connection is lost."""
        outcomes: list[str | None] = [None] * len(messages)
        tags: dict[int, int] = {}  # delivery tag -> index in messages
        for index, message in enumerate(messages):
            try:
                self._impl.basic_publish(
                    message.exchange,
                    message.routing_key,
                    message.body,
                    message.properties,
                    message.mandatory,
                )
            except (pex.AMQPConnectionError, pex.AMQPChannelError, pex.StreamLostError) as error:
                raise BrokerError(f"lost RabbitMQ while publishing: {error!r}") from None
            except Exception as error:  # pika cannot encode it: nothing of it was sent
                outcomes[index] = f"{type(error).__name__}: {error}"
                continue
            self._sent += 1
            tags[self._sent] = index
            self._unconfirmed.add(self._sent)
        if tags:
            self._wait(lambda: not self._unconfirmed, "confirms")
        for tag, index in tags.items():
            message = messages[index]
            where = f"{message.exchange or '(default)'}/{message.routing_key}"
            if not self._confirmed.pop(tag):
                outcomes[index] = f"RabbitMQ refused a message for {where}: nack"
            elif message.properties.message_id in self._returned:
                outcomes[index] = f"RabbitMQ could not route a message for {where}: no queue"
        self._returned.clear()
        return outcomes

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        acked = isinstance(method, Basic.Ack)
        tag = int(method.delivery_tag)
        settled = [t for t in self._unconfirmed if t <= tag] if method.multiple else [tag]
        for earlier in settled:
            self._unconfirmed.discard(earlier)
            self._confirmed[earlier] = acked

    def _on_return(
        self, _channel: Any, _method: Any, properties: BasicProperties, _body: bytes
    ) -> None:
        if properties.message_id is not None:
            self._returned.add(properties.message_id)

    def _wait(self, done: Callable[[], bool], what: str) -> None:
        """Process I/O until ``done`` (the way pika's blocking channel waits for its own
        answers: ``_flush_output``, which returns as soon as a waiter is satisfied)."""
        deadline = time.monotonic() + CONFIRM_TIMEOUT

        def closed() -> bool:
            return not self._impl.is_open

        def late() -> bool:
            return time.monotonic() > deadline

        try:
            self.connection._flush_output(done, closed, late)
        except (pex.AMQPConnectionError, pex.AMQPChannelError, pex.StreamLostError) as error:
            raise BrokerError(f"lost RabbitMQ while waiting for {what}: {error!r}") from None
        if not done():
            problem = "closed the publishing channel" if closed() else "did not answer in time"
            raise BrokerError(f"RabbitMQ {problem} while we waited for {what}")
