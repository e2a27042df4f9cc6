"""Metric and multi-view questions in the rig's random rooms (``vilasr synth rig-metric``).

The rooms, furniture and two-camera rig of ``rig_tasks``, with questions a robot asks about
geometry, each settled by an oracle that draws what it measures (ground truth from the scene):

- ``rig_cross_nearest``: which of the objects one camera shows is nearest to an object the other
  camera shows (boxes on both views);
- ``rig_distance``: how far apart two objects are, metres (regression, scored by mean relative
  accuracy; a line between where they stand);
- ``rig_room_size``: the floor area of the room, square metres (regression; a line along the base
  of the far wall);
- ``rig_route``: standing at one object facing another, is a third on the left or the right (a
  floor-plan direction; lines for the facing and to the target).
"""

from __future__ import annotations

import math

from ros_vilasr.core.protocol import OBJECT_MAPPER, PATH_TRACER

from . import scene as sc
from .rig_tasks import CAMERAS, CUBE, DISTANCE_MARGIN, GRID, RigViews, rig_task
from .trajectories import PlanStep, Reject, box_op, lettered, line_op

MIN_DISTANCE = 0.3  # metres: closer objects make a poor distance question
MIN_BEARING, MAX_BEARING = 20.0, 160.0  # degrees off the facing line: a clear left or right


def cross_nearest(rng, views: RigViews):
    ref_cam = int(rng.integers(2))
    other = 1 - ref_cam
    refs = [n for n in views.scene.names if views.visible(ref_cam, n)]
    if not refs:
        raise Reject
    ref = refs[int(rng.integers(len(refs)))]
    candidates = [n for n in views.scene.names if n != ref and views.visible(other, n) and n != CUBE[0]]
    if len(candidates) < 3:
        raise Reject
    candidates = [candidates[i] for i in rng.choice(len(candidates), 3, replace=False)]
    dist = {c: sc.object_distance(views.scene.object(ref), views.scene.object(c)) for c in candidates}
    closest, second = sorted(candidates, key=dist.get)[:2]
    if dist[second] - dist[closest] < DISTANCE_MARGIN:
        raise Reject
    options, answer = lettered(candidates, closest)
    steps = [PlanStep(f"I box the {ref} in the {CAMERAS[ref_cam]} camera's image and the candidates in the "
                      f"{CAMERAS[other]} camera's image.", OBJECT_MAPPER,
                      [(ref_cam, box_op(views.boxes[ref_cam][ref], ref))]
                      + [(other, box_op(views.boxes[other][c], c)) for c in candidates])]
    thought = (f"Matching the two views, the {closest} is nearest to the {ref}, about {dist[closest]:.1f} m away; "
               f"the {second} is about {dist[second]:.1f} m. Option {answer}.")
    question = (f"Which of these objects seen by the {CAMERAS[other]} camera is closest to the {ref} seen by the "
                f"{CAMERAS[ref_cam]} camera?")
    return [0, 1], question, options, "multiple choice", answer, steps, thought


def _objects_in_view(rng, views: RigViews, count: int) -> tuple[int, list[str]]:
    cam = int(rng.integers(2))
    seen = [n for n in views.scene.names if views.visible(cam, n) and n != CUBE[0]]
    if len(seen) < count:
        raise Reject
    return cam, [seen[i] for i in rng.choice(len(seen), count, replace=False)]


def distance(rng, views: RigViews):
    cam, (a, b) = _objects_in_view(rng, views, 2)
    d = sc.object_distance(views.scene.object(a), views.scene.object(b))
    if d < MIN_DISTANCE:
        raise Reject
    steps = [
        PlanStep(f"I box the {a} and the {b}.", OBJECT_MAPPER, [(0, box_op(views.boxes[cam][n], n)) for n in (a, b)]),
        PlanStep("The boxes on image {latest[0]} fit. I join where the two stand on the floor.", PATH_TRACER,
                 [(0, line_op(views.floor_point(cam, a), views.floor_point(cam, b), "gap"))]),
    ]
    thought = f"Against the floor tiles, the line on image {{latest[0]}} spans about {d:.1f} m between the two."
    question = f"How far apart are the {a} and the {b} (closest points), in metres?"
    return [cam], question, [], "regression", f"{d:.1f}", steps, thought


def _clip(p, q, width: float, height: float):
    """The part of segment p-q inside [0, width-1] x [0, height-1] (Liang-Barsky), or None."""
    (x0, y0), (dx, dy) = p, (q[0] - p[0], q[1] - p[1])
    lo, hi = 0.0, 1.0
    for step, room in ((-dx, x0), (dx, width - 1 - x0), (-dy, y0), (dy, height - 1 - y0)):
        if step == 0:
            if room < 0:
                return None
            continue
        t = room / step
        lo, hi = (max(lo, t), hi) if step < 0 else (lo, min(hi, t))
    if hi - lo < 0.2:  # less than a fifth of the wall in view
        return None
    return (x0 + lo * dx, y0 + lo * dy), (x0 + hi * dx, y0 + hi * dy)


def room_size(rng, views: RigViews):
    cam = int(rng.integers(2))
    camera = views.cameras[cam]
    sx, sy = views.scene.room.size[:2]
    yaw = math.radians(camera.yaw)
    ahead = (math.cos(yaw), math.sin(yaw))
    walls = {"y": ((0, sy), (sx, sy)), "-y": ((0, 0), (sx, 0)), "x": ((sx, 0), (sx, sy)), "-x": ((0, 0), (0, sy))}
    far = max(walls, key=lambda w: {"y": ahead[1], "-y": -ahead[1], "x": ahead[0], "-x": -ahead[0]}[w])
    (u0, v0, z0), (u1, v1, z1) = camera.project([(*walls[far][0], 0.0), (*walls[far][1], 0.0)])
    if z0 <= 0 or z1 <= 0:
        raise Reject
    scale = GRID[0] / camera.width, GRID[1] / camera.height
    seen = _clip((u0 * scale[0], v0 * scale[1]), (u1 * scale[0], v1 * scale[1]), *GRID)
    if seen is None:
        raise Reject
    width = sx if far in ("y", "-y") else sy
    depth = sy if far in ("y", "-y") else sx
    area = sc.room_area(views.scene.room)
    steps = [PlanStep("I trace the base of the far wall to measure the room.", PATH_TRACER,
                      [(0, line_op(*seen, "far wall"))])]
    thought = (f"The far wall on image {{latest[0]}} is about {width:.1f} m long and the room about {depth:.1f} m "
               f"deep, so the floor is about {area:.0f} square metres.")
    question = "What is the floor area of this room, in square metres?"
    return [cam], question, [], "regression", f"{area:.0f}", steps, thought


def route(rng, views: RigViews):
    cam, (start, facing, target) = _objects_in_view(rng, views, 3)
    obj = views.scene.object
    bearing = sc.bearing_deg(obj(start).position, obj(facing).position, obj(target).position)
    if not MIN_BEARING <= abs(bearing) <= MAX_BEARING:
        raise Reject
    truth = sc.relative_direction(obj(start).position, obj(facing).position, obj(target).position, "lr")
    answer = "A" if truth == "left" else "B"
    here = views.floor_point(cam, start)
    steps = [PlanStep(f"On the floor plan I draw the way from the {start} towards the {facing}, and the way to "
                      f"the {target}.", PATH_TRACER,
                      [(0, line_op(here, views.floor_point(cam, facing), "facing")),
                       (0, line_op(here, views.floor_point(cam, target), f"to {target}"))])]
    thought = (f"Turning from the facing line to the line to the {target} is a turn of about {abs(bearing):.0f} "
               f"degrees to the {truth}: option {answer}.")
    question = f"If you stand by the {start} facing the {facing}, is the {target} to your left or to your right?"
    return [cam], question, ["A. left", "B. right"], "multiple choice", answer, steps, thought


QUESTIONS = {"rig_cross_nearest": cross_nearest, "rig_distance": distance, "rig_room_size": room_size,
             "rig_route": route}
SUB_TASKS = tuple(QUESTIONS)


def metric_task(seed: int, index: int, reflective_share: float = 0.0):
    """Item ``index`` of the metric set with this seed (the rig's rooms; never reflective)."""
    return rig_task(seed, index, reflective_share, questions=QUESTIONS, salt=5)


def metric_tasks(n: int, seed: int, reflective_share: float = 0.0):
    for index in range(n):
        yield metric_task(seed, index, reflective_share)

