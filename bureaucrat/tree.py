"""The activity tree of an instance as text: what ``bureaucratctl show ID --tree`` prints.

One activity a line, indented by depth: its id, its element and label, and its state (with what
it waits on, or its loop round). The state is coloured with ANSI codes when asked to (a terminal,
and ``NO_COLOR`` unset: see ``wants_colour``). Ids, labels and details come from definitions and
messages that anyone may have written, so each is escaped (``ctl.printable``) before the colour
codes are put around it: no value can inject its own escape sequences.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import TextIO

from bureaucrat.ctl import printable
from bureaucrat.engine.describe import ActivityState, ActivityView, Role

_COLOURS = {
    ActivityState.NOT_STARTED: "2",  # dim
    ActivityState.ACTIVE: "36",  # cyan
    ActivityState.WAITING: "33",  # yellow
    ActivityState.DONE: "32",  # green
    ActivityState.FAULTED: "1;31",  # bold red
    ActivityState.CANCELLED: "35",  # magenta
    ActivityState.SKIPPED: "2",
}
INDENT = "  "


def wants_colour(stream: TextIO, environ: Mapping[str, str] = os.environ) -> bool:
    """Colour for a terminal, unless ``NO_COLOR`` is set to anything (https://no-color.org)."""
    return stream.isatty() and not environ.get("NO_COLOR")


def render(view: ActivityView, colour: bool = False) -> Iterator[str]:
    """The lines of the tree under (and including) ``view``."""
    yield from _lines(view, 0, colour)


def _lines(view: ActivityView, depth: int, colour: bool) -> Iterator[str]:
    what = _what(view)
    state = printable(state_text(view))
    if colour:
        state = f"\x1b[{_COLOURS[view.state]}m{state}\x1b[0m"
    yield f"{INDENT * depth}{printable(view.id)}  {printable(what)}  {state}"
    for child in view.children:
        yield from _lines(child, depth + 1, colour)


def _what(view: ActivityView) -> str:
    """The element and its label: ``action review``, ``handler default``."""
    element = "handler" if view.role is Role.HANDLER else view.element
    if not view.label or view.label == element:
        return element
    return f"{element} {view.label}"


def state_text(view: ActivityView) -> str:
    """``waiting on workitem p_0.3``, ``active, round 3``, ``active, 2 of 3``, ``faulted: E: m``."""
    text = view.state.value.replace("_", " ")
    if view.waiting_on is not None:
        text += f" on {view.waiting_on.value}"
        if view.detail:
            text += f" {view.detail}"
    elif view.detail:
        text += f": {view.detail}"
    if view.round is not None:
        text += f", {view.round} of {view.of}" if view.of is not None else f", round {view.round}"
    return text
