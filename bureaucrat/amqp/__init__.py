"""The AMQP adapter: the only place that talks to pika."""

from bureaucrat.amqp.connection import Broker, Delivery
from bureaucrat.amqp.topology import QueueArguments, Topology, queue_arguments

__all__ = ["Broker", "Delivery", "QueueArguments", "Topology", "queue_arguments"]
