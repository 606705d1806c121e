"""The AMQP adapter: the only place that talks to pika."""

from bureaucrat.amqp.connection import Broker, Delivery
from bureaucrat.amqp.topology import Topology

__all__ = ["Broker", "Delivery", "Topology"]
