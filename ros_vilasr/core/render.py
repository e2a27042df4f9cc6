"""The renderer: what the environment draws for a drawing step (spec §2, pixel for pixel).

Per image we keep the boxes and lines drawn on it. A step targeting image k yields a new image: a
copy of k's pixels with k's lists merged with the step's operations (same label replaces in place,
new labels append) drawn on top, boxes first, then lines.
"""

from __future__ import annotations

import functools
import math
import weakref
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
AA_MARGIN = 2  # pixels around a stroke or a glyph that anti-aliasing may touch
Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)


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
    """A copy of ``base`` with ``drawing`` rendered on it (``drawn_over`` says where it differs)."""
    out = base.copy()
    _DRAWN_OVER[id(out)] = (weakref.ref(out), weakref.ref(base), footprint(drawing))
    weakref.finalize(out, _DRAWN_OVER.pop, id(out), None)
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


# id(drawn image) -> weak references to it and to its base, and its footprint (PIL images are
# unhashable; weak, so that a drawn image kept for publishing does not keep its ancestors alive)
_DRAWN_OVER: dict[int, tuple[weakref.ref, weakref.ref, tuple[Rect, ...]]] = {}


def drawn_over(image: Image.Image) -> tuple[Image.Image, tuple[Rect, ...]] | None:
    """(base, rects) when ``image`` came from ``draw``: it equals ``base`` outside ``rects``, so its
    patches can be redone only there (``patches.Patcher.repatchify``)."""
    entry = _DRAWN_OVER.get(id(image))
    if entry is None or entry[0]() is not image or (base := entry[1]()) is None:
        return None
    return base, entry[2]


def footprint(drawing: Drawing) -> tuple[Rect, ...]:
    """Rectangles that hold every pixel ``draw`` may change: each box's four strokes and its label,
    each line in short pieces (a diagonal's bounding box could be the whole image) with its dots."""
    m, rects = AA_MARGIN, []
    font = _default_font()
    for box in drawing.boxes:
        x1, y1, x2, y2 = (int(v) for v in box.bbox)
        x1, x2 = min(x1, x2), max(x1, x2)
        y1, y2 = min(y1, y2), max(y1, y2)
        w = STROKE + m
        rects += [(x1 - m, y1 - m, x2 + m + 1, y1 + w), (x1 - m, y2 - w + 1, x2 + m + 1, y2 + m + 1),
                  (x1 - m, y1 - m, x1 + w, y2 + m + 1), (x2 - w + 1, y1 - m, x2 + m + 1, y2 + m + 1)]
        left, top, right, bottom = font.getbbox(box.label)
        tx, ty = x1 + LABEL_OFFSET[0], y1 + LABEL_OFFSET[1]
        rects.append((tx + left - m, ty + top - m, tx + right + m, ty + bottom + m))
    r = max(STROKE, DOT_RADIUS) + m
    for line in drawing.lines:
        (sx, sy), (ex, ey) = (tuple(int(v) for v in p) for p in (line.start, line.end))
        pieces = max(1, math.ceil(math.hypot(ex - sx, ey - sy) / 16))
        points = [(sx + (ex - sx) * k / pieces, sy + (ey - sy) * k / pieces) for k in range(pieces + 1)]
        rects += [(math.floor(min(ax, bx)) - r, math.floor(min(ay, by)) - r,
                   math.ceil(max(ax, bx)) + r + 1, math.ceil(max(ay, by)) + r + 1)
                  for (ax, ay), (bx, by) in zip(points, points[1:])]
    return tuple(rects)


def targets_in_order(ops: list[Op]) -> list[int]:
    """Target indices in the order they first appear among the boxes, then among the lines."""
    order: list[int] = []
    for op in [o for o in ops if isinstance(o, Box)] + [o for o in ops if isinstance(o, Line)]:
        if op.index not in order:
            order.append(op.index)
    return order
