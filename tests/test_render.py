"""Pixel-exact checks of the renderer against spec §2."""

import numpy as np
from PIL import Image, ImageColor, ImageDraw

from ros_vilasr.core.protocol import Box, Line
from ros_vilasr.core.render import PALETTE, Drawing, draw, drawn_over, footprint, targets_in_order

WHITE = (255, 255, 255)


def rgb(name):
    return ImageColor.getrgb(name)[:3]


def canvas(w=300, h=200):
    return Image.new("RGB", (w, h), WHITE)


def test_box_outline_width_colour_and_label():
    out = draw(canvas(), Drawing(boxes=(Box(1, "cup", (40.9, 30.2, 140.7, 120.0)),)))
    # truncated to (40, 30, 140, 120); outline 4 px wide, inwards
    for x in (40, 43):
        assert out.getpixel((x, 80)) == rgb("red")
    assert out.getpixel((44, 80)) == WHITE
    assert out.getpixel((39, 80)) == WHITE
    for y in (30, 33):
        assert out.getpixel((90, y)) == rgb("red")
    assert out.getpixel((90, 34)) == WHITE
    assert out.getpixel((140, 80)) == rgb("red") and out.getpixel((141, 80)) == WHITE
    # label text in the box colour (anti-aliased: reddish pixels), starting at (x1 + 8, y1 + 6)
    label = [(x, y) for x in range(44, 137) for y in range(34, 117) if out.getpixel((x, y)) != WHITE]
    assert label and min(x for x, _ in label) >= 48 and min(y for _, y in label) >= 36
    assert all(g == b and r >= g for r, g, b in (out.getpixel(p) for p in label))


def test_swapped_corners_are_reordered():
    a = draw(canvas(), Drawing(boxes=(Box(1, "a", (140, 120, 40, 30)),)))
    b = draw(canvas(), Drawing(boxes=(Box(1, "a", (40, 30, 140, 120)),)))
    assert a.tobytes() == b.tobytes()


def test_line_black_with_red_start_and_blue_end_dots_and_no_label():
    out = draw(canvas(), Drawing(lines=(Line(1, "path", (50, 100), (250, 100)),)))
    assert out.getpixel((150, 100)) == (0, 0, 0)
    # width 4 around y=100: rows 99..102
    assert [out.getpixel((150, y)) == (0, 0, 0) for y in range(97, 105)] == [
        False, False, True, True, True, True, False, False]
    assert out.getpixel((50, 100)) == rgb("red")
    assert out.getpixel((250, 100)) == rgb("blue")
    assert out.getpixel((50, 104)) == rgb("red")  # radius 4
    assert out.getpixel((50, 106)) == WHITE
    assert all(out.getpixel((x, y)) == WHITE for x in range(0, 300) for y in range(0, 90))


def test_palette_order_and_cycling():
    assert PALETTE[:5] == ["red", "green", "blue", "yellow", "orange"]
    assert PALETTE[22] == "silver" and PALETTE[23] == next(iter(ImageColor.colormap))
    boxes = tuple(Box(1, f"b{i}", (5 + 12 * i, 5, 14 + 12 * i, 190)) for i in range(24))
    out = draw(Image.new("RGB", (300, 200), WHITE), Drawing(boxes=boxes))
    for i in (0, 1, 2, 8, 22, 23):
        assert out.getpixel((5 + 12 * i, 100)) == rgb(PALETTE[i]), i


def test_boxes_drawn_before_lines():
    d = Drawing(boxes=(Box(1, "b", (50, 50, 150, 150)),), lines=(Line(1, "l", (10, 50), (290, 50)),))
    out = draw(canvas(), d)
    assert out.getpixel((100, 50)) == (0, 0, 0)  # the line covers the box's top edge


def test_label_merge_replaces_in_place_and_keeps_colour():
    d = Drawing().merged([Box(1, "chair", (10, 10, 50, 50)), Box(1, "table", (100, 10, 150, 50))])
    d2 = d.merged([Box(2, "chair", (12, 60, 52, 100)), Line(2, "route", (0, 0), (5, 5))])
    assert [b.label for b in d2.boxes] == ["chair", "table"]
    assert d2.boxes[0].bbox == (12, 60, 52, 100)
    assert d2.lines == (Line(2, "route", (0, 0), (5, 5)),)
    out = draw(canvas(), d2)
    assert out.getpixel((12, 80)) == rgb("red")  # still palette[0]
    assert out.getpixel((100, 30)) == rgb("green")


def test_unicode_label_does_not_crash():
    out = draw(canvas(), Drawing(boxes=(Box(1, "椅子 🪑", (10, 10, 100, 100)),)))
    assert out.getpixel((10, 50)) == rgb("red")


def test_targets_order_boxes_first_then_lines():
    ops = [Line(3, "l", (0, 0), (1, 1)), Box(2, "b", (0, 0, 1, 1)), Line(1, "m", (0, 0), (1, 1)),
           Box(3, "c", (0, 0, 1, 1))]
    assert targets_in_order(ops) == [2, 3, 1]


def reference_draw(base, boxes, lines):
    """Spec §2 written out with the reference's own PIL calls (labels: draw.text, no font)."""
    out = base.copy()
    pen = ImageDraw.Draw(out)
    for i, (label, (x1, y1, x2, y2)) in enumerate(boxes):
        color = PALETTE[i % len(PALETTE)]
        x1, y1, x2, y2 = int(x1), int(y1), int(x2), int(y2)
        pen.rectangle((min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)), outline=color, width=4)
        pen.text((min(x1, x2) + 8, min(y1, y2) + 6), label, fill=color)
    for (sx, sy), (ex, ey) in lines:
        pen.line((sx, sy, ex, ey), fill="black", width=4)
        pen.ellipse((sx - 4, sy - 4, sx + 4, sy + 4), fill="red")
        pen.ellipse((ex - 4, ey - 4, ex + 4, ey + 4), fill="blue")
    return out


def test_label_heavy_drawing_is_pixel_identical_to_the_reference():
    rng = np.random.default_rng(7)
    base = Image.fromarray(rng.integers(0, 256, (364, 504, 3), dtype=np.uint8))
    labels = ["red cube", "chair #2", "Tür", "椅子", "trash can (left)", "a" * 40, "x", "sofa", "tv", "lamp"]
    boxes = [(label, tuple(float(v) for v in rng.uniform(0, 500, 4))) for label in labels]
    lines = [tuple((int(rng.integers(0, 504)), int(rng.integers(0, 364))) for _ in range(2)) for _ in range(6)]
    ours = draw(base, Drawing(boxes=tuple(Box(1, label, bbox) for label, bbox in boxes),
                              lines=tuple(Line(1, f"l{i}", s, e) for i, (s, e) in enumerate(lines))))
    reference = reference_draw(base, boxes, lines)
    assert np.array_equal(np.asarray(ours), np.asarray(reference))


def test_footprint_holds_every_pixel_a_drawing_changes():
    """``drawn_over`` tells the encoder where a drawn image may differ from its base (it redoes only
    those patches): boxes, labels and lines anywhere — at the edges, past them, diagonal, tiny."""
    rng = np.random.default_rng(3)
    base = Image.fromarray(rng.integers(0, 256, (224, 336, 3), dtype=np.uint8))
    for trial in range(40):
        boxes = tuple(Box(1, f"obj {trial}-{k} ÿ", tuple(int(v) for v in rng.integers(-40, 380, 4)))
                      for k in range(int(rng.integers(0, 4))))
        lines = tuple(Line(1, "", tuple(int(v) for v in rng.integers(-40, 380, 2)),
                           tuple(int(v) for v in rng.integers(-40, 380, 2))) for _ in range(int(rng.integers(0, 3))))
        drawing = Drawing(boxes, lines)
        out = draw(base, drawing)
        got, rects = drawn_over(out)
        assert got is base and rects == footprint(drawing)
        changed = np.asarray(out) != np.asarray(base)
        covered = np.zeros(changed.shape[:2], dtype=bool)
        for x0, y0, x1, y1 in rects:
            covered[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = True
        assert not (changed.any(-1) & ~covered).any(), f"trial {trial}: a changed pixel outside the footprint"
    assert drawn_over(base) is None and drawn_over(out.copy()) is None  # only draw()'s own result
