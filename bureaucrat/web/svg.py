"""SVG primitives for the console's diagram: laid-out shapes, lines, arrows, labels.

A ``Shape`` knows its size and how to draw itself once placed; drawing appends SVG text to an
``Out`` list. Every text put into the SVG goes through ``markupsafe.escape``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from markupsafe import escape

CHAR_W = 6.7  # about, at 12px in the console's sans-serif font
CHIP_ROOM = 200  # the widest a chip (a case's condition) is drawn

Out = list[str]


@dataclass(frozen=True, slots=True)
class Shape:
    """A laid-out piece of the drawing: its size and how to draw it with its top left at x, y."""

    w: float
    h: float
    draw: Callable[[float, float, Out], None]


def placeholder(text: str) -> Shape:
    w, h = max(text_width(text) + 24, 96), 26

    def paint(x: float, y: float, out: Out) -> None:
        out.append(
            f'<rect class="placeholder" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h}" '
            f'rx="6"/><text class="placeholder-text" x="{x + w / 2:.1f}" y="{y + 17:.1f}" '
            f'text-anchor="middle">{escape(text)}</text>'
        )

    return Shape(w, h, paint)


def arrow(out: Out, x1: float, y1: float, x2: float, y2: float) -> None:
    out.append(
        f'<line class="edge" x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2 - 1:.1f}" '
        'marker-end="url(#arrow)"/>'
    )


def line(x1: float, y1: float, x2: float, y2: float) -> str:
    return f'<line class="edge" x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}"/>'


def bar(x: float, y: float, w: float) -> str:
    return f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="4" rx="2"/>'


def chip(cx: float, y: float, text: str) -> str:
    shown = fit(text, CHIP_ROOM)
    w = text_width(shown) + 16
    return (
        f'<g class="chip"><rect x="{cx - w / 2:.1f}" y="{y:.1f}" width="{w:.1f}" height="17" '
        f'rx="8.5"/><text x="{cx:.1f}" y="{y + 12.5:.1f}" text-anchor="middle">'
        f"{escape(shown)}</text><title>{escape(text)}</title></g>"
    )


def text_width(text: str | None) -> float:
    return len(text or "") * CHAR_W


def fit(text: str, room: float) -> str:
    """``text`` cut with an ellipsis to fit ``room`` pixels, about; on one line."""
    text = " ".join(text.split())
    most = max(int(room / CHAR_W), 4)
    return text if len(text) <= most else text[: most - 1] + "…"
