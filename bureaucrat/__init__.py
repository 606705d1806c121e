"""bureaucrat: a durable workflow engine driven by XML process definitions over AMQP."""

__version__ = "0.1.0"
