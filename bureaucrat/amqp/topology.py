"""The exchanges, queues and bindings bureaucrat uses, declared as data and idempotently.

Queues (durable): launches, responses and control messages, events, and the dead letters.
Publishing to the default exchange with a queue's name as routing key works, as the original's
tools expect; a direct exchange (``bureaucrat``) routes the same keys to the first three queues,
and a topic exchange carries notifications of finished processes (``process.<status>``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pika.adapters.blocking_connection import BlockingChannel

from bureaucrat.config import Config


@dataclass(frozen=True)
class Topology:
    exchange: str
    notifications: str
    routed_queues: tuple[str, ...]
    dead_letter_queue: str

    @classmethod
    def from_config(cls, config: Config) -> Topology:
        return cls(
            exchange=config.exchange,
            notifications=config.notifications_exchange,
            routed_queues=(config.launch_queue, config.message_queue, config.event_queue),
            dead_letter_queue=config.dead_letter_queue,
        )

    def declare(self, channel: BlockingChannel) -> None:
        channel.exchange_declare(self.exchange, exchange_type="direct", durable=True)
        channel.exchange_declare(self.notifications, exchange_type="topic", durable=True)
        for queue in self.routed_queues:
            channel.queue_declare(queue, durable=True)
            channel.queue_bind(queue, self.exchange, routing_key=queue)
        channel.queue_declare(self.dead_letter_queue, durable=True)
