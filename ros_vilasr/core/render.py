"""The renderer: what the environment draws for a drawing step (spec §2, pixel for pixel).

Per image we keep the boxes and lines drawn on it. A step targeting image k yields a new image: a
copy of k's pixels with k's lists merged with the step's operations (same label replaces in place,
new labels append) drawn on top, boxes first, then lines.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from PIL import Image, ImageColor, ImageDraw, ImageFont

from .protocol import Box, Line, Op

PALETTE = [
    "red", "green", "blue", "yellow", "orange", "pink", "purple", "brown", "gray", "beige",
    "turquoise", "cyan", "magenta", "lime", "navy", "maroon", "teal", "olive", "coral", "lavender",
    "violet", "gold", "silver", *ImageColor.colormap,
]
STROKE = 4
DOT_RADIUS = 4
LABEL_OFFSET = (8, 6)


@dataclass(frozen=True)
class Drawing:
    """The boxes and lines drawn on one image, in drawing order."""

    boxes: tuple[Box, ...] = ()
    lines: tuple[Line, ...] = ()

    def merged(self, ops: list[Op]) -> Drawing:
        boxes, lines = list(self.boxes), list(self.lines)
        for op in ops:
            items = boxes if isinstance(op, Box) else lines
            at = next((i for i, old in enumerate(items) if old.label == op.label), None)
            if at is None:
                items.append(op)
            else:
                items[at] = op
        return Drawing(tuple(boxes), tuple(lines))


@functools.cache
def _default_font():
    """Pillow's default font, loaded once (each new ImageDraw would decode it again)."""
    return ImageFont.load_default()


def draw(base: Image.Image, drawing: Drawing) -> Image.Image:
    """A copy of ``base`` with ``drawing`` rendered on it."""
    out = base.copy()
    pen = ImageDraw.Draw(out)
    pen.font = _default_font()
    for i, box in enumerate(drawing.boxes):
        color = PALETTE[i % len(PALETTE)]
        x1, y1, x2, y2 = (int(v) for v in box.bbox)
        x1, x2 = min(x1, x2), max(x1, x2)
        y1, y2 = min(y1, y2), max(y1, y2)
        pen.rectangle((x1, y1, x2, y2), outline=color, width=STROKE)
        # No font, as the reference: Pillow's default (FreeType, size 10, anti-aliased, unicode).
        pen.text((x1 + LABEL_OFFSET[0], y1 + LABEL_OFFSET[1]), box.label, fill=color)
    for line in drawing.lines:
        (sx, sy), (ex, ey) = (tuple(int(v) for v in p) for p in (line.start, line.end))
        pen.line((sx, sy, ex, ey), fill="black", width=STROKE)
        for (x, y), color in (((sx, sy), "red"), ((ex, ey), "blue")):
            pen.ellipse((x - DOT_RADIUS, y - DOT_RADIUS, x + DOT_RADIUS, y + DOT_RADIUS), fill=color)
    return out


def targets_in_order(ops: list[Op]) -> list[int]:
    """Target indices in the order they first appear among the boxes, then among the lines."""
    order: list[int] = []
    for op in [o for o in ops if isinstance(o, Box)] + [o for o in ops if isinstance(o, Line)]:
        if op.index not in order:
            order.append(op.index)
    return order
