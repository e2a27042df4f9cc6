"""Recorded reasoning traces for the demo questions, generated from the renderer's ground truth.

Each trace is what a good ViLaSR model would say: drawing steps whose boxes are the objects'
true visible boxes (in the model's resized grid of the key frame), Path Tracer lines between their
centres, one reflection (a loose box redrawn tight under the same label), and the correct answer.
Every trace is run through the core ``Session`` before it is written, so it is known to replay to
the right answer with executable drawings.
"""

from __future__ import annotations

import json

from PIL import Image

from ros_vilasr.core import protocol
from ros_vilasr.core.images import MAX_PIXELS_EVAL, prepare_image
from ros_vilasr.core.session import Reply, Session

from .layout import DemoQuestion

LOOSE_MARGIN_PX = 24  # how far the deliberately loose first box overshoots, in the model grid


def model_box(box, source_size, grid_size) -> list[int]:
    """A source-pixel box (x1, y1, x2, y2) in the model's resized grid, rounded to whole pixels."""
    sx, sy = grid_size[0] / source_size[0], grid_size[1] / source_size[1]
    return [round(box[0] * sx), round(box[1] * sy), round(box[2] * sx), round(box[3] * sy)]


def center(box) -> list[int]:
    return [round((box[0] + box[2]) / 2), round((box[1] + box[3]) / 2)]


def _turn(thought: str, action: str, ops: list[dict] | None = None, answer: str | None = None) -> str:
    text = f"<think>{thought}</think>\nAction: {action}\n"
    if ops is not None:
        text += "```json\n" + json.dumps(ops) + "\n```"
    if answer is not None:
        text += f"<answer>{answer}</answer>"
    return text


def _boxes(index: int, boxes: dict[str, list[int]], names: list[str]) -> list[dict]:
    return [{"index": index, "bbox_2d": boxes[n], "label": n} for n in names if boxes.get(n)]


def side_question_turns(q: DemoQuestion, boxes: list[dict], grid) -> list[str]:
    """Left/right of the table in one view: map both, tighten the chair (reflection), trace, answer."""
    b = boxes[0]
    w, h = grid[0]
    chair = b["chair"]
    loose = [max(0, chair[0] - LOOSE_MARGIN_PX), max(0, chair[1] - LOOSE_MARGIN_PX),
             min(w, chair[2] + LOOSE_MARGIN_PX), min(h, chair[3] + LOOSE_MARGIN_PX)]
    side = "left" if center(chair)[0] < center(b["table"])[0] else "right"
    if f". {side}" not in next(o for o in q.options if o.startswith(q.answer + ".")):
        raise AssertionError(f"the drawn boxes put the chair to the {side}, the ground truth disagrees")
    return [
        _turn("I need the positions of the table and the chair in the left camera's image. "
              "I will mark both with boxes first.", protocol.OBJECT_MAPPER,
              [{"index": 1, "bbox_2d": b["table"], "label": "table"},
               {"index": 1, "bbox_2d": loose, "label": "chair"}]),
        _turn("Checking image 2: the table box fits, but the chair box is too loose; it takes in "
              "floor around the chair, which shifts its centre. I redraw both boxes on the original "
              "image, the chair box tightly this time.", protocol.OBJECT_MAPPER,
              [{"index": 1, "bbox_2d": b["table"], "label": "table"},
               {"index": 1, "bbox_2d": chair, "label": "chair"}]),
        _turn("Both boxes now fit in image 3. A line from the table's centre to the chair's centre "
              "shows the direction from the table to the chair in this view.", protocol.PATH_TRACER,
              [{"index": 3, "start_point_2d": center(b["table"]), "end_point_2d": center(chair),
                "label": "table to chair"}]),
        _turn(f"In image 4 the line runs from the table towards the {side} of the image, so from the "
              f"left camera's view the chair is to the {side} of the table.", protocol.ANSWER,
              answer=q.answer),
    ]


def count_question_turns(q: DemoQuestion, boxes: list[dict], floor_names: list[str],
                         all_names: list[str]) -> list[str]:
    """Count on the floor: map every object in both views, then reason about what rests on what."""
    others = [n for n in all_names if n not in floor_names]
    ops = _boxes(1, boxes[0], all_names) + _boxes(2, boxes[1], all_names)
    return [
        _turn("I will mark every object I can see in both camera views, so that none is missed "
              "and none is counted twice.", protocol.OBJECT_MAPPER, ops),
        _turn(f"Images 3 and 4 show the same {len(all_names)} objects from both cameras. The "
              f"{', '.join(floor_names)} stand on the floor; the {', '.join(others)} rests on top of "
              f"the table, so it is not on the floor. That makes {len(floor_names)} objects on the "
              "floor.", protocol.ANSWER, answer=q.answer),
    ]


def nearest_question_turns(q: DemoQuestion, boxes: list[dict], candidates: list[str],
                           nearest: str) -> list[str]:
    """Closest to the lamp: map the lamp and the candidates in the right view, trace, answer."""
    b = boxes[1]  # the right camera shows more of the lamp than the left one
    lines = [{"index": 3, "start_point_2d": center(b["lamp"]), "end_point_2d": center(b[n]),
              "label": f"lamp to {n}"} for n in candidates if b.get(n)]
    return [
        _turn("The right camera's view (image 2) shows the lamp, partly behind the crate, and every "
              "candidate object. I mark them all there.", protocol.OBJECT_MAPPER,
              _boxes(2, b, ["lamp", *candidates])),
        _turn("To compare distances I trace a line in image 3 from the lamp's centre to the centre "
              "of each candidate.",
              protocol.PATH_TRACER, lines),
        _turn(f"In image 4 the line to the {nearest} is clearly the shortest: the {nearest} stands "
              "right next to the lamp, while the other objects are farther away.",
              protocol.ANSWER, answer=q.answer),
    ]


def replay_session(q: DemoQuestion, frames: list[Image.Image], turns: list[str]) -> Session:
    """Run the scripted turns through the real session; fail loudly if they are not a clean trace."""
    session = Session(frames, q.question, options=q.options, problem_type=q.problem_type,
                      kind="single" if len(frames) == 1 else "views", max_pixels=MAX_PIXELS_EVAL)
    for turn in turns:
        session.submit(Reply(turn))
    if session.finish_reason != "answer" or session.answer != q.answer:
        raise AssertionError(f"{q.question!r}: trace ends with {session.finish_reason} / "
                             f"{session.answer!r}, expected answer {q.answer!r} ({session.error})")
    if not protocol.format_ok(session.assistant_turns):
        raise AssertionError(f"{q.question!r}: trace is not well formed")
    return session


def grid_boxes(frames: list[Image.Image], source_boxes: list[dict]) -> tuple[list[dict], list]:
    """Per camera, each visible object's box in that frame's model grid."""
    grids = [prepare_image(f, MAX_PIXELS_EVAL).size for f in frames]
    out = [{name: model_box(box, f.size, g) for name, box in boxes.items() if box is not None}
           for f, g, boxes in zip(frames, grids, source_boxes)]
    return out, grids


def watch_question_turns(q: DemoQuestion, boxes: list[dict]) -> list[str]:
    """The standing question on the key frame: box the robot and the table, compare, answer."""
    b = boxes[0]
    side = "left" if center(b["robot"])[0] < center(b["table"])[0] else "right"
    return [
        _turn("I mark the robot and the table in the left camera's image.", protocol.OBJECT_MAPPER,
              _boxes(1, b, ["robot", "table"])),
        _turn(f"In image 2 the robot's box is centred to the {side} of the table's, so the robot is to the "
              f"{side} of the table.", protocol.ANSWER, answer=q.answer),
    ]
