"""Activities that complete (or fault) the moment they start: ``fault`` and ``assign``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bureaucrat.definition.model import Assign, Fault

if TYPE_CHECKING:
    from bureaucrat.engine.runtime import Runtime


def start_fault(runtime: Runtime, spec: Fault) -> None:
    """``<fault code= message=/>``: raises the fault (code ``terminate`` when the element names
    none, as the original); never completes."""
    runtime.fault(spec.path, spec.code, spec.message)


def start_assign(runtime: Runtime, spec: Assign) -> None:
    """``<assign property="p">expr</assign>``: completes once the property is set; faults
    ``ExpressionError`` if the expression fails, ``LimitExceeded`` if the value does not fit."""
    ok, value = runtime.evaluate(spec.expression, spec.path)
    if ok and runtime.write(spec.path, spec.property, value):
        runtime.complete(spec.path)
