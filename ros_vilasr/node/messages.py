"""ROS messages of a query's outputs: reasoning steps, drawn images, overlay markers, the answer.

Everything is stamped with the header of the camera frame it derives from (never now()), and
every coordinate a robot sees is in that frame's pixels (the session keeps both grids).
"""

from __future__ import annotations

from geometry_msgs.msg import Point
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from visualization_msgs.msg import ImageMarker

from ros_vilasr.core.render import PALETTE, STROKE
from ros_vilasr_interfaces.msg import DrawOp, ReasoningStep, SpatialAnswer

from .conversions import rgba, to_image_msg
from .depth import lift_fields
from .queries import CHOICE, NUMBER, Job, typed_answer

ANSWER_KINDS = {CHOICE: SpatialAnswer.KIND_CHOICE, NUMBER: SpatialAnswer.KIND_NUMBER}


def source_header(job: Job, image_index: int) -> Header:
    """Header of the camera frame the dialogue's image ``image_index`` (1-based) derives from."""
    return job.frames[job.session.origin[image_index - 1]].header


def step_msg(job: Job, step, target=None) -> ReasoningStep:
    """A step's message; lifted drawings in ``target``'s frame (``frames.TargetFrame``) where it can."""
    def lifted(frame, op) -> dict:
        fields = lift_fields(frame, op)
        return target.apply(fields, frame.header.stamp) if target is not None else fields

    ops = [DrawOp(kind=DrawOp.BOX if op.kind == "box" else DrawOp.LINE, label=op.label,
                  image_index=op.image_index, source_image_index=op.source_index,
                  model_coords=[float(c) for c in op.model_coords],
                  source_coords=[float(c) for c in op.source_coords],
                  header=job.frames[op.source_index - 1].header,
                  **lifted(job.frames[op.source_index - 1], op))
           for op in step.ops]
    return ReasoningStep(step=step.step, thought=step.thought or "", action=step.action or "", ops=ops,
                         revises_earlier=step.revises, new_image_indices=step.new_images,
                         error=step.error or "")


def step_images(job: Job, step) -> list[Image]:
    """The images a step drew, as the model saw them, each with its source frame's header."""
    return [to_image_msg(job.session.images[n - 1], source_header(job, n)) for n in step.new_images]


def markers(job: Job, query: int, image_index: int) -> list[ImageMarker]:
    """Drawn image ``image_index`` as overlay primitives in SOURCE pixels, coloured as rendered:
    boxes as polygons in palette order, lines black with the red start and blue end dots."""
    session = job.session
    source = session.inputs[session.origin[image_index - 1]]
    header = source_header(job, image_index)
    sx, sy = source.scale
    ns = f"query{query}/image{image_index}"
    width = float(STROKE * (sx + sy) / 2)
    drawing = session.drawings[image_index - 1]
    out: list[ImageMarker] = []

    def points(coords):
        xy = source.to_source(coords)
        return [Point(x=float(xy[i]), y=float(xy[i + 1]), z=0.0) for i in range(0, len(xy), 2)]

    def add(kind, **fields):
        out.append(ImageMarker(header=header, ns=ns, id=len(out), type=kind, action=ImageMarker.ADD, **fields))

    for i, box in enumerate(drawing.boxes):
        x1, y1, x2, y2 = box.bbox
        add(ImageMarker.POLYGON, scale=width, outline_color=rgba(PALETTE[i % len(PALETTE)]),
            points=points([x1, y1, x2, y1, x2, y2, x1, y2]))
    for line in drawing.lines:
        ends = points(line.coords)
        add(ImageMarker.LINE_LIST, scale=width, outline_color=rgba("black"), points=ends)
        add(ImageMarker.POINTS, scale=width * 2, points=ends, outline_colors=[rgba("red"), rgba("blue")])
    return out


def box_colours(job: Job, step) -> dict[str, str]:
    """Label -> palette colour of the boxes in the images a step drew (as the renderer coloured them)."""
    return {box.label: PALETTE[i % len(PALETTE)] for n in step.new_images
            for i, box in enumerate(job.session.drawings[n - 1].boxes)}


def answer_msg(job: Job, model: str, target=None) -> SpatialAnswer:
    """The result of a finished job: typed answer, trace (``target``: as in ``step_msg``), provenance, costs."""
    session = job.session
    headers = [f.header for f in job.frames]
    newest = max(headers, key=lambda h: (h.stamp.sec, h.stamp.nanosec)) if headers else Header()
    reason = job.finish_reason
    text = (session.answer if session is not None else None) or ""
    error = "" if reason == "answer" else job.error or (session.error if session is not None else None) or ""
    kind, choice, value = (typed_answer(text, job.problem_type, job.options) if reason == "answer"
                           else ("text", "", 0.0))
    msg = SpatialAnswer(
        header=Header(stamp=newest.stamp, frame_id=newest.frame_id), question=job.question,
        options=job.options, problem_type=job.problem_type, answer=text,
        answer_kind=ANSWER_KINDS.get(kind, SpatialAnswer.KIND_TEXT), choice=choice, value=float(value),
        finish_reason=reason, error=error, source_headers=headers, model=model, latency_s=job.latency_s)
    if session is not None:
        msg.steps = [step_msg(job, s, target) for s in session.steps]
        msg.model_calls = session.calls
        msg.prompt_tokens = session.prompt_tokens
        msg.completion_tokens = session.completion_tokens
    return msg
