"""The AMQP adapter: the only place that talks to pika."""

from bureaucrat.amqp.connection import Broker, Delivery, properties
from bureaucrat.amqp.pipeline import Pipeline, Publication
from bureaucrat.amqp.topology import QueueArguments, Topology, queue_arguments

__all__ = [
    "Broker",
    "Delivery",
    "Pipeline",
    "Publication",
    "QueueArguments",
    "Topology",
    "properties",
    "queue_arguments",
]
