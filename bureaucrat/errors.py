"""The exceptions bureaucrat raises.

Domain outcomes inside a running process (a fault, a failed action) are never exceptions: the
engine turns them into state and commands. Exceptions are for callers that hand us bad input.

    BureaucratError
     ├── DefinitionError        a process definition that cannot be accepted (carries the line)
     ├── ExpressionError        an expression that failed while it was evaluated
     ├── ConfigError            a config file or setting that cannot be used
     │    └── TopologyError     RabbitMQ holds a queue or exchange declared otherwise (e.g. a
     │                          classic queue where queue_type = quorum): an operator must act
     ├── BrokerError            RabbitMQ cannot be reached or was lost (worth a reconnect)
     │    └── PublishError      RabbitMQ refused a message or could not route it
     ├── StoreError             the database failed or cannot be used (worth a retry)
     ├── StoreDataError         the database refused one message's data (an invalid value, a
     │                          constraint): retrying cannot help, the message is set aside
     ├── SchemaOutdatedError    the database schema is older than this bureaucrat: run
     │                          `bureaucratctl db upgrade` (retrying would not help)
     ├── ParticipantNotFoundError    the local runner was asked for a participant it was not given
     └── StepLimitError      the local runner stopped a process that would not finish
"""

from __future__ import annotations


class BureaucratError(Exception):
    """The root of every exception bureaucrat raises on purpose."""


class DefinitionError(BureaucratError):
    """A process definition is malformed or invalid.

    ``line`` is the 1-based line of the offending XML element (None when unknown) and
    ``problem`` the description without the line prefix.
    """

    def __init__(self, problem: str, line: int | None = None) -> None:
        self.problem = problem
        self.line = line
        super().__init__(f"line {line}: {problem}" if line is not None else problem)


class ExpressionError(BureaucratError):
    """An expression raised an error or exceeded a limit while it was evaluated."""


class ParticipantNotFoundError(BureaucratError):
    """The local runner met an action whose participant it was not given."""


class StepLimitError(BureaucratError):
    """The local runner gave up on a process that kept going past ``max_steps``."""


class ConfigError(BureaucratError):
    """A configuration file or setting that cannot be used."""


class TopologyError(ConfigError):
    """RabbitMQ already has a queue or exchange of ours declared with other arguments (another
    queue type, another delivery limit); the message says what to delete or to set.

    Not a ``BrokerError``: declaring again cannot succeed, so the daemon stops instead of
    reconnecting.
    """


class BrokerError(BureaucratError):
    """RabbitMQ cannot be reached or the connection was lost; a reconnect may help."""


class PublishError(BrokerError):
    """RabbitMQ refused a published message (nack) or could not route it."""


class StoreError(BureaucratError):
    """The database failed (connection lost, lock timeout, constraint) or cannot be used."""


class StoreDataError(BureaucratError):
    """The database refused the data of one operation: a value it cannot store (a NUL on
    PostgreSQL, a lone surrogate), a constraint, an encoding error.

    Not a ``StoreError``: the same data would be refused again, so the daemon dead-letters the
    message or sets the instance aside instead of reconnecting.
    """


class SchemaOutdatedError(BureaucratError):
    """The database schema is older than this bureaucrat; ``bureaucratctl db upgrade`` fixes it.

    Not a ``StoreError``: waiting and retrying cannot help, an operator has to act.
    """
