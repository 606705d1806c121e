"""The pure engine: ``step(definition, state, event, now) -> Step(state, commands)``."""

from bureaucrat.engine import commands, events
from bureaucrat.engine.budget import DEFAULT_LIMITS, LIMIT_EXCEEDED, Limits
from bureaucrat.engine.state import State, Status, activity_id, is_finished, root_context
from bureaucrat.engine.step import Step, step

__all__ = [
    "DEFAULT_LIMITS",
    "LIMIT_EXCEEDED",
    "Limits",
    "State",
    "Status",
    "Step",
    "activity_id",
    "commands",
    "events",
    "is_finished",
    "root_context",
    "step",
]
