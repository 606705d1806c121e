"""The process drawn as SVG, laid out on the server from the definition.

The definition gives the shape, ``describe``'s views the colours (by activity path), so the same
drawing serves a definition alone (every activity not started) and a running instance::

    svg = draw(definition, views_by_path(describe(definition, state)), links={...})

A sequence flows top to bottom; ``all`` branches and ``switch`` cases stand side by side between a
fork and a join; ``while`` and ``foreach`` are frames with a loop-back arrow and their round; a
block's fault handlers stand to the right of its body. Each activity is a ``<g class="activity
s-<state>">`` carrying ``data-activity`` (its wire id) and ``data-path``, so a page can select it.

Every text that comes from a definition or a state is escaped here (``markupsafe.escape``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from markupsafe import Markup, escape

from bureaucrat.definition.model import (
    Action,
    Activity,
    All,
    Assign,
    Await,
    Block,
    Call,
    Case,
    Definition,
    Delay,
    Fault,
    FaultHandler,
    Foreach,
    Process,
    Switch,
    While,
)
from bureaucrat.engine.state import activity_id
from bureaucrat.web.svg import (
    CHIP_ROOM,
    Out,
    Shape,
    arrow,
    bar,
    chip,
    fit,
    line,
    placeholder,
    text_width,
)

BOX_W, BOX_H = 176, 48
GAP_Y = 30  # between two steps of a sequence (room for the arrow)
GAP_X = 22  # between branches side by side
PAD = 12  # inside a frame
HEAD = 24  # a frame's title
MARGIN = 16
START_R = 8


class View(Protocol):
    """What the drawing reads of an activity's view (``describe``'s ``ActivityView``)."""

    @property
    def id(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def waiting_on(self) -> str | None: ...
    @property
    def detail(self) -> str | None: ...
    @property
    def round(self) -> int | None: ...
    @property
    def of(self) -> int | None: ...
    @property
    def children(self) -> Iterable[View]: ...


def views_by_path(root: View) -> dict[str, View]:
    """Every view of the tree under ``root``, by activity path."""
    found: dict[str, View] = {}
    stack = [root]
    while stack:
        view = stack.pop()
        found[view.path] = view
        stack.extend(view.children)
    return found


@dataclass(frozen=True, slots=True)
class _Drawing:
    """What every part of one drawing needs: the process id, the views and the links."""

    process_id: str
    views: Mapping[str, View]
    links: Mapping[str, str]  # activity path -> URL (a call's subprocess)

    def state(self, path: str) -> str:
        view = self.views.get(path)
        return view.state if view is not None else "not_started"

    def wire_id(self, path: str) -> str:
        view = self.views.get(path)
        return view.id if view is not None and view.id else activity_id(self.process_id, path)


def draw(
    definition: Definition,
    views: Mapping[str, View] | None = None,
    links: Mapping[str, str] | None = None,
    process_id: str = "",
) -> Markup:
    """The SVG of ``definition``, coloured by ``views`` (path -> view; none: not started), with
    ``links`` (activity path -> URL) on the activities that lead somewhere (a call's child)."""
    drawing = _Drawing(process_id, views or {}, links or {})
    body = _root(drawing, definition.root)
    width, height = body.w + 2 * MARGIN, body.h + 2 * MARGIN
    out: Out = [
        f'<svg class="diagram" xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        'aria-label="process diagram">',
        "<defs>"
        '<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'class="arrowhead"/></marker></defs>',
    ]
    body.draw(MARGIN, MARGIN, out)
    out.append("</svg>")
    return Markup("".join(out))


# shapes -----------------------------------------------------------------------------------------


def _shape(drawing: _Drawing, activity: Activity) -> Shape:
    if isinstance(activity, Switch):
        return _switch(drawing, activity)
    if isinstance(activity, All):
        return _all(drawing, activity)
    if isinstance(activity, While | Foreach):
        return _loop(drawing, activity)
    if isinstance(activity, Block):
        return _framed(drawing, activity, "sequence", _stack(drawing, activity.children))
    return _box(drawing, activity)


def _root(drawing: _Drawing, process: Process) -> Shape:
    """The process: a start, its activities top to bottom, an end, and its fault handlers."""
    body = _stack(drawing, process.children)
    handlers = _handlers(drawing, process)
    w = max(body.w, 2 * START_R)
    h = body.h + 2 * (2 * START_R + GAP_Y)
    total_w = w + (GAP_X + handlers.w if handlers is not None else 0)
    total_h = max(h, handlers.h if handlers is not None else 0)
    state = drawing.state("")

    def paint(x: float, y: float, out: Out) -> None:
        cx = x + w / 2
        out.append(_group_open(drawing, process, "process", "act-start"))
        out.append(f'<circle class="start" cx="{cx:.1f}" cy="{y + START_R:.1f}" r="{START_R}"/>')
        out.append("</g>")
        top = y + 2 * START_R
        arrow(out, cx, top, cx, top + GAP_Y)
        body.draw(x + (w - body.w) / 2, top + GAP_Y, out)
        bottom = top + GAP_Y + body.h
        arrow(out, cx, bottom, cx, bottom + GAP_Y)
        end_class = "end done" if state == "done" else f"end s-{state}"
        out.append(
            f'<circle class="{end_class}" cx="{cx:.1f}" cy="{bottom + GAP_Y + START_R:.1f}" '
            f'r="{START_R}"/>'
        )
        if handlers is not None:
            handlers.draw(x + w + GAP_X, y, out)

    return Shape(total_w, total_h, paint)


def _stack(drawing: _Drawing, activities: Iterable[Activity]) -> Shape:
    """Activities one under the other, centred, joined by arrows."""
    shapes = [_shape(drawing, activity) for activity in activities]
    if not shapes:
        return placeholder("nothing to do")
    w = max(shape.w for shape in shapes)
    h = sum(shape.h for shape in shapes) + GAP_Y * (len(shapes) - 1)

    def paint(x: float, y: float, out: Out) -> None:
        cx = x + w / 2
        for index, shape in enumerate(shapes):
            if index:
                arrow(out, cx, y - GAP_Y, cx, y)
            shape.draw(cx - shape.w / 2, y, out)
            y += shape.h + GAP_Y

    return Shape(w, h, paint)


def _side_by_side(drawing: _Drawing, columns: list[tuple[str | None, Shape]], kind: str) -> Shape:
    """Columns between a fork and a join (``all`` branches, ``switch`` cases); each column may
    have a label above it (a case's condition)."""
    label_h = 36 if any(label is not None for label, _ in columns) else 0
    widths = [
        max(shape.w, text_width(fit(label, CHIP_ROOM)) + 16 if label else 0)
        for label, shape in columns
    ]
    w = sum(widths) + GAP_X * (len(columns) - 1)
    body_h = max(shape.h for _, shape in columns) + label_h
    h = body_h + 2 * GAP_Y

    def paint(x: float, y: float, out: Out) -> None:
        fork, join = y + 4, y + h - 4
        centres = []
        left = x
        for width in widths:
            centres.append(left + width / 2)
            left += width + GAP_X
        cx = x + w / 2
        if kind == "all":
            out.append(bar(centres[0] - 6, fork - 2, centres[-1] - centres[0] + 12))
            out.append(bar(centres[0] - 6, join - 2, centres[-1] - centres[0] + 12))
        else:
            out.append(line(centres[0], fork, centres[-1], fork))
            out.append(line(centres[0], join, centres[-1], join))
            out.append(f'<circle class="merge" cx="{cx:.1f}" cy="{join:.1f}" r="3.5"/>')
        for (label, shape), centre in zip(columns, centres, strict=True):
            top = y + GAP_Y
            if label is not None:
                out.append(line(centre, fork, centre, top + 2))
                out.append(chip(centre, top + 2, label))
                arrow(out, centre, top + 19, centre, top + label_h)
            else:
                arrow(out, centre, fork, centre, top)
            shape_top = top + label_h
            shape.draw(centre - shape.w / 2, shape_top, out)
            out.append(line(centre, shape_top + shape.h, centre, join))

    return Shape(w, h, paint)


def _all(drawing: _Drawing, spec: All) -> Shape:
    if not spec.children:
        return _framed(drawing, spec, "all", placeholder("no branches"))
    columns: list[tuple[str | None, Shape]] = [
        (None, _shape(drawing, child)) for child in spec.children
    ]
    return _framed(drawing, spec, "all · in parallel", _side_by_side(drawing, columns, "all"))


def _switch(drawing: _Drawing, spec: Switch) -> Shape:
    if not spec.cases:
        return _framed(drawing, spec, "switch", placeholder("no cases"))
    columns: list[tuple[str | None, Shape]] = []
    for case in spec.cases:
        columns.append((_case_label(case), _case(drawing, case)))
    return _framed(
        drawing, spec, "switch · first case that holds", _side_by_side(drawing, columns, "switch")
    )


def _case(drawing: _Drawing, case: Case) -> Shape:
    """A case's activities, in a light frame that can be selected (it has an id of its own)."""
    body = _stack(drawing, case.children)
    w, h = body.w + 2 * 6, body.h + 2 * 6

    def paint(x: float, y: float, out: Out) -> None:
        out.append(_group_open(drawing, case, "case", "act-case"))
        out.append(
            f'<rect class="case-frame" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" '
            'rx="8"/>'
        )
        out.append("</g>")
        body.draw(x + 6, y + 6, out)

    return Shape(w, h, paint)


def _case_label(case: Case) -> str:
    if case.is_default:
        return "otherwise"
    return " or ".join(condition.source for condition in case.conditions) or "case"


def _loop(drawing: _Drawing, spec: While | Foreach) -> Shape:
    if isinstance(spec, While):
        title = "while " + (" or ".join(c.source for c in spec.conditions) or "…")
    else:
        title = f"foreach {spec.select}"
    body = _stack(drawing, spec.children)
    inner = Shape(body.w + 2 * 14, body.h + 2 * 10, _with_loopback(body))
    view = drawing.views.get(spec.path)
    rounds = None
    if view is not None and view.round is not None:
        rounds = f"round {view.round}" + (f" of {view.of}" if view.of is not None else "")
    return _framed(drawing, spec, title, inner, badge=rounds)


def _with_loopback(body: Shape) -> Callable[[float, float, Out], None]:
    def paint(x: float, y: float, out: Out) -> None:
        body.draw(x + 14, y + 10, out)
        right = x + 14 + body.w + 8
        cx = x + 14 + body.w / 2
        out.append(
            f'<path class="loop" d="M{cx:.1f},{y + 10 + body.h:.1f} V{y + body.h + 16:.1f} '
            f'H{right:.1f} V{y + 4:.1f} H{cx + 10:.1f}" marker-end="url(#arrow)"/>'
        )

    return paint


def _framed(
    drawing: _Drawing, spec: Activity, title: str, inner: Shape, badge: str | None = None
) -> Shape:
    """A block: a frame with its title (selectable, like an activity), its body inside, and its
    fault handlers, if it has any, to the right of the body."""
    handlers = _handlers(drawing, spec) if isinstance(spec, Block) else None
    content_w = inner.w + (GAP_X + handlers.w if handlers is not None else 0)
    content_h = max(inner.h, handlers.h if handlers is not None else 0)
    title_w = text_width(title) + (text_width(badge) + 24 if badge else 0) + 2 * PAD
    w = max(content_w + 2 * PAD, min(title_w, 420), BOX_W)
    h = content_h + HEAD + PAD
    state = drawing.state(spec.path)

    def paint(x: float, y: float, out: Out) -> None:
        out.append(_group_open(drawing, spec, spec.tag, "act-block"))
        out.append(
            f'<rect class="frame" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" '
            'rx="10"/>'
        )
        room = w - 2 * PAD - (text_width(badge) + 24 if badge else 0)
        out.append(
            f'<text class="frame-title" x="{x + PAD:.1f}" y="{y + 16:.1f}">'
            f"{escape(fit(title, room))}</text>"
        )
        if badge:
            bw = text_width(badge) + 14
            out.append(
                f'<rect class="badge" x="{x + w - PAD - bw:.1f}" y="{y + 5:.1f}" '
                f'width="{bw:.1f}" height="16" rx="8"/>'
                f'<text class="badge-text" x="{x + w - PAD - bw / 2:.1f}" y="{y + 16.5:.1f}" '
                f'text-anchor="middle">{escape(badge)}</text>'
            )
        out.append(f"<title>{escape(_tooltip(spec.tag, title, state, drawing, spec.path))}</title>")
        out.append("</g>")
        inner.draw(x + (w - content_w) / 2, y + HEAD, out)
        if handlers is not None:
            handlers.draw(x + (w - content_w) / 2 + inner.w + GAP_X, y + HEAD, out)

    return Shape(w, h, paint)


def _handlers(drawing: _Drawing, block: Block) -> Shape | None:
    """A block's fault handlers, side by side, each under the codes it catches."""
    if block.context is None or not block.context.handlers:
        return None
    shapes = [_handler(drawing, handler) for handler in block.context.handlers]
    w = sum(shape.w for shape in shapes) + GAP_X * (len(shapes) - 1)
    h = max(shape.h for shape in shapes)

    def paint(x: float, y: float, out: Out) -> None:
        for shape in shapes:
            shape.draw(x, y, out)
            x += shape.w + GAP_X

    return Shape(w, h, paint)


def _handler(drawing: _Drawing, handler: FaultHandler) -> Shape:
    title = "on any fault" if handler.is_default else "on fault " + ", ".join(handler.codes)
    body = _stack(drawing, handler.activities)
    w = max(body.w + 2 * PAD, min(text_width(title) + 2 * PAD, 360))
    h = body.h + HEAD + PAD

    state = drawing.state(handler.path)

    def paint(x: float, y: float, out: Out) -> None:
        out.append(
            f'<g class="fault-handler s-{escape(state)}" data-path="{escape(handler.path)}" '
            f'data-state="{escape(state)}">'
        )
        out.append(
            f'<rect class="handler" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" '
            'rx="10"/>'
        )
        out.append(
            f'<text class="handler-title" x="{x + PAD:.1f}" y="{y + 16:.1f}">'
            f"{escape(fit(title, w - 2 * PAD))}</text>"
        )
        out.append(f"<title>{escape(title)}: {escape(state.replace('_', ' '))}</title></g>")
        body.draw(x + (w - body.w) / 2, y + HEAD, out)

    return Shape(w, h, paint)


def _box(drawing: _Drawing, spec: Activity) -> Shape:
    """One step: its kind above, what it does below, coloured by its state."""
    kind, label = _describe_box(spec)
    state = drawing.state(spec.path)
    view = drawing.views.get(spec.path)
    waiting = view.waiting_on if view is not None else None
    link = drawing.links.get(spec.path)

    def paint(x: float, y: float, out: Out) -> None:
        out.append(_group_open(drawing, spec, spec.tag, "act-box"))
        out.append(
            f'<rect class="box" x="{x:.1f}" y="{y:.1f}" width="{BOX_W}" height="{BOX_H}" rx="8"/>'
        )
        out.append(
            f'<text class="kind" x="{x + 12:.1f}" y="{y + 17:.1f}">{escape(kind.upper())}</text>'
        )
        status = _state_text(state, waiting)
        if status:
            out.append(
                f'<text class="state-text" x="{x + BOX_W - 10:.1f}" y="{y + 17:.1f}" '
                f'text-anchor="end">{escape(status)}</text>'
            )
        out.append(
            f'<text class="label" x="{x + 12:.1f}" y="{y + 36:.1f}">'
            f"{escape(fit(label, BOX_W - 24))}</text>"
        )
        out.append(f"<title>{escape(_tooltip(kind, label, state, drawing, spec.path))}</title>")
        out.append("</g>")
        if link is not None:
            out.append(
                f'<a class="child-link" href="{escape(link)}"><rect class="child-link-box" '
                f'x="{x + BOX_W - 64:.1f}" y="{y + BOX_H - 9:.1f}" width="58" height="16" rx="8"/>'
                f'<text x="{x + BOX_W - 35:.1f}" y="{y + BOX_H + 2.5:.1f}" '
                'text-anchor="middle">child \u203a</text></a>'
            )

    return Shape(BOX_W, BOX_H, paint)


def _describe_box(spec: Activity) -> tuple[str, str]:
    if isinstance(spec, Action):
        return "action", spec.participant
    if isinstance(spec, Assign):
        return "assign", f"{spec.property} = {spec.expression.source}"
    if isinstance(spec, Delay):
        return "delay", f"{spec.duration:g} s"
    if isinstance(spec, Await):
        return "await", spec.event
    if isinstance(spec, Fault):
        return "fault", f"{spec.code}: {spec.message}" if spec.message else spec.code
    if isinstance(spec, Call):
        return "call", f"${spec.process}"
    return spec.tag, ""


_STATE_TEXT = {
    "active": "running",
    "done": "done",
    "faulted": "faulted",
    "cancelled": "cancelled",
    "skipped": "skipped",
}


def _state_text(state: str, waiting: str | None) -> str:
    if state == "waiting":
        return "failed" if waiting == "failed" else f"waiting · {waiting}" if waiting else "waiting"
    return _STATE_TEXT.get(state, "")


def _tooltip(kind: str, label: str, state: str, drawing: _Drawing, path: str) -> str:
    view = drawing.views.get(path)
    waiting = f" on {view.waiting_on}" if view is not None and view.waiting_on else ""
    detail = f": {view.detail}" if view is not None and view.detail else ""
    text = f"{kind} {label}".strip()
    return f"{text}\n{state.replace('_', ' ')}{waiting}{detail}\n{drawing.wire_id(path)}"


def _group_open(drawing: _Drawing, spec: Activity, element: str, shape: str) -> str:
    state = drawing.state(spec.path)
    view = drawing.views.get(spec.path)
    waiting = f" w-{escape(view.waiting_on)}" if view is not None and view.waiting_on else ""
    return (
        f'<g class="activity {shape} s-{escape(state)}{waiting}" data-activity="'
        f'{escape(drawing.wire_id(spec.path))}" data-path="{escape(spec.path)}" '
        f'data-element="{escape(element)}" data-state="{escape(state)}" tabindex="0">'
    )
