"""VSI-Bench / SPAR-style questions about rendered 3-D rooms, with oracle drawing trajectories.

Scenes come from ``synth.scene`` (boxes in a room with a 50 cm floor checker). Two set-ups:

- one view from a high corner of the room: relative direction, relative distance, object size;
- a video: a camera turning in place at the middle of the room, 8 frames 45 degrees apart:
  counting and appearance order.

The oracle knows the scene: it boxes the objects with Object Mapper (the renderer's visible-pixel
boxes; the images are rendered in the model's grid, so they need no mapping) and draws the lines
that settle the question with Path Tracer, then answers from the ground truth. Scenes are drawn
again (from the same seeded generator) until the question is unambiguous: every object it names is
clearly visible and no answer sits near a decision boundary.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import numpy as np

from ros_vilasr.core.protocol import OBJECT_MAPPER, PATH_TRACER

from . import scene as sc
from .trajectories import (
    Mistake,
    OracleDialogue,
    PlanStep,
    Reject,
    SynthTask,
    box_op,
    is_reflective_share,
    line_op,
    model_grid_size,
    multiple_choice,
    until_unambiguous,
)

WIDTH, HEIGHT = 448, 336  # multiples of 28 below the training pixel cap: the model sees them unresized
ROOM = sc.Room(size=(7.0, 6.0, 2.8))
TILE_CM = round(ROOM.floor_tile * 100)
REFERENCE_TILES = 2  # the scale reference is 1 m of tile edge
REFERENCE_CM = TILE_CM * REFERENCE_TILES
MIN_SIZE_BOX_SIDE = 30  # pixels; an object whose size is asked about is shown large enough to measure
VIDEO_FRAMES = 8
MIN_BOX_SIDE = 14  # pixels; smaller visible boxes do not count as clearly visible
DIRECTION_MARGIN = 15.0  # degrees away from the quadrant boundaries
DISTANCE_MARGIN = 0.3  # metres between the closest and the second closest object
MAX_TRIES = 200
SUB_TASKS = ("object_rel_direction", "object_rel_distance", "object_size_estimation", "object_counting",
             "obj_appearance_order")
QUADRANTS = ("front-left", "front-right", "back-left", "back-right")

Box = tuple[int, int, int, int]


@dataclasses.dataclass
class Views:
    """What the cameras saw: one image and visible-object boxes per camera."""

    scene: sc.Scene
    cameras: list[sc.Camera]
    images: list
    boxes: list[dict[str, Box | None]]
    layers: list[sc.Rendering]

    def shown_size(self, frame: int, name: str) -> int:
        """The shorter side of the object's visible box, in pixels (0 when hidden)."""
        box = self.boxes[frame][name]
        return 0 if box is None else min(box[2] - box[0], box[3] - box[1])

    def visible(self, frame: int, name: str) -> bool:
        return self.shown_size(frame, name) >= MIN_BOX_SIDE

    def first_frame(self, name: str) -> int | None:
        return next((f for f in range(len(self.cameras)) if self.visible(f, name)), None)

    def bbox(self, frame: int, name: str) -> list[int]:
        x1, y1, x2, y2 = self.boxes[frame][name]
        return [x1, y1, x2 - 1, y2 - 1]  # the renderer's x2, y2 are exclusive

    def floor_point(self, frame: int, name: str) -> tuple[float, float]:
        """Where the object stands, in the image: its footprint centre projected, or the bottom
        centre of its visible box when that point is out of view."""
        obj = self.scene.object(name)
        u, v, z = self.cameras[frame].project([(obj.position[0], obj.position[1], obj.bottom)])[0]
        if z > 0 and 0 <= u < WIDTH and 0 <= v < HEIGHT:
            return float(u), float(v)
        x1, _, x2, y2 = self.bbox(frame, name)
        return (x1 + x2) / 2, float(y2)


def _render(scene: sc.Scene, cameras: list[sc.Camera]) -> Views:
    layers = [sc.render_layers(scene, cam) for cam in cameras]
    return Views(scene, cameras, [r.image for r in layers], [r.boxes for r in layers], layers)


def corner_view(rng, scene: sc.Scene) -> Views:
    sx, sy, _ = ROOM.size
    x, y = [(0.3, 0.3), (sx - 0.3, 0.3), (sx - 0.3, sy - 0.3), (0.3, sy - 0.3)][int(rng.integers(4))]
    camera = sc.Camera.looking_at((x, y, 2.3), (sx / 2, sy / 2, 0.3), fov_deg=90, width=WIDTH, height=HEIGHT)
    return _render(scene, [camera])


def turning_video(rng, scene: sc.Scene) -> Views:
    start = float(rng.integers(8)) * 45.0
    centre = (ROOM.size[0] / 2, ROOM.size[1] / 2, 2.3)  # above every catalogue object
    cameras = [sc.Camera(centre, yaw=start + 45.0 * k, pitch=35, fov_deg=80, width=WIDTH, height=HEIGHT)
               for k in range(VIDEO_FRAMES)]
    return _render(scene, cameras)


def _shifted(views: Views, frame: int, name: str, label: str) -> tuple[dict, str]:
    """A box pushed sideways off its object, and the reason the oracle gives when it notices."""
    x1, y1, x2, y2 = views.bbox(frame, name)
    shift = max(24, round(0.7 * (x2 - x1)))
    if (x1 + x2) / 2 > WIDTH / 2:
        shift = -shift
    shift = max(-x1, min(WIDTH - 1 - x2, shift))
    side = "right" if shift > 0 else "left"
    reason = f"the box '{label}' is shifted to the {side} and misses most of the {name}."
    return box_op([x1 + shift, y1, x2 + shift, y2], label), reason


def _box_mistake(rng, views: Views, steps: list[PlanStep], names: list[tuple[int, str]]) -> Mistake:
    """A wrong box in the first step (the Object Mapper step): ``names`` = its (frame, name)s."""
    at = int(rng.integers(len(names)))
    frame, name = names[at]
    wrong, reason = _shifted(views, frame, name, steps[0].ops[at][1]["label"])
    return Mistake(0, at, wrong, reason)


def _pick(rng, pool: list[str], k: int) -> list[str]:
    if len(pool) < k:
        raise Reject
    return [pool[i] for i in rng.choice(len(pool), size=k, replace=False)]


# -- single view -------------------------------------------------------------------------------


def rel_direction(rng, reflective: bool) -> tuple:
    views = corner_view(rng, sc.random_scene(rng, int(rng.integers(4, 7)), ROOM))
    seen = [n for n in views.scene.names if views.visible(0, n)]
    stand, face, target = _pick(rng, seen, 3)
    s, f, t = (views.scene.object(n).position for n in (stand, face, target))
    angle = sc.bearing_deg(s, f, t)
    if min(abs(abs(angle) - b) for b in (0.0, 90.0, 180.0)) < DIRECTION_MARGIN:
        raise Reject
    answer_text = sc.relative_direction(s, f, t, "quadrant")
    question = (f"If I am standing by the {stand} and facing the {face}, is the {target} to my front-left, "
                "front-right, back-left, or back-right? The directions refer to the quadrants of a Cartesian "
                "plane (if I am standing at the origin and facing along the positive y-axis).")
    letters = "ABCD"
    options = [f"{letters[i]}. {q}" for i, q in enumerate(QUADRANTS)]
    answer = letters[QUADRANTS.index(answer_text)]
    names = [(0, stand), (0, face), (0, target)]
    steps = [
        PlanStep(f"I need the positions of the {stand} (where I stand), the {face} (where I look) and the "
                 f"{target}. I locate all three.", OBJECT_MAPPER,
                 [(0, box_op(views.bbox(0, n), n)) for _, n in names]),
        PlanStep(f"Image {{latest[0]}} shows the three boxes on the right objects. From where the {stand} "
                 f"stands I draw the facing direction toward the {face} and the direction to the {target}.",
                 PATH_TRACER,
                 [(0, line_op(views.floor_point(0, stand), views.floor_point(0, face), "facing")),
                  (0, line_op(views.floor_point(0, stand), views.floor_point(0, target), f"to {target}"))]),
    ]
    side = "left" if angle > 0 else "right"
    ahead = "ahead of me" if abs(angle) < 90 else "behind me"
    thought = (f"On image {{latest[0]}}, seen from above the room, the line to the {target} turns about "
               f"{abs(angle):.0f} degrees to the {side} of the facing line, so it is {ahead} and to my {side}: "
               f"{answer_text}, option {answer}.")
    mistake = _box_mistake(rng, views, steps, names) if reflective else None
    return views, question, options, answer, steps, mistake, thought


def rel_distance(rng, reflective: bool) -> tuple:
    views = corner_view(rng, sc.random_scene(rng, int(rng.integers(5, 8)), ROOM))
    seen = [n for n in views.scene.names if views.visible(0, n)]
    ref, *candidates = _pick(rng, seen, 5)
    dist = {c: sc.object_distance(views.scene.object(ref), views.scene.object(c)) for c in candidates}
    closest, second = sorted(candidates, key=dist.get)[:2]
    if dist[second] - dist[closest] < DISTANCE_MARGIN:
        raise Reject
    letters = "ABCD"
    options = [f"{letters[i]}. {c}" for i, c in enumerate(candidates)]
    answer = letters[candidates.index(closest)]
    question = (f"Measuring from the closest point of each object, which of these objects ({', '.join(candidates)}) "
                f"is the closest to the {ref}?")
    names = [(0, ref)] + [(0, c) for c in candidates]
    steps = [
        PlanStep(f"I locate the {ref} and the four candidates.", OBJECT_MAPPER,
                 [(0, box_op(views.bbox(0, n), n)) for _, n in names]),
        PlanStep(f"The boxes on image {{latest[0]}} sit on the right objects. I connect where the {ref} stands "
                 "with where each candidate stands to compare the distances.", PATH_TRACER,
                 [(0, line_op(views.floor_point(0, ref), views.floor_point(0, c), f"to {c}")) for c in candidates]),
    ]
    thought = (f"Comparing the lines on image {{latest[0]}} with the floor tiles ({TILE_CM} cm each), the {closest} "
               f"is about {dist[closest]:.1f} m from the {ref}, the next closest, the {second}, about "
               f"{dist[second]:.1f} m. The closest is the {closest}, option {answer}.")
    mistake = _box_mistake(rng, views, steps, names) if reflective else None
    return views, question, options, answer, steps, mistake, thought


def _longest_edge(views: Views, name: str) -> tuple[tuple, tuple, str]:
    """The object's edge along its longest dimension nearest to the camera (world endpoints)."""
    obj = views.scene.object(name)
    lo, hi = obj.min_corner, obj.max_corner
    axis = int(np.argmax(obj.size))
    others = [a for a in range(3) if a != axis]
    camera = np.asarray(views.cameras[0].position)
    edges = []
    for p in (lo[others[0]], hi[others[0]]):
        for q in (lo[others[1]], hi[others[1]]):
            a, b = np.empty(3), np.empty(3)
            a[others], b[others] = (p, q), (p, q)
            a[axis], b[axis] = lo[axis], hi[axis]
            edges.append((float(np.linalg.norm((a + b) / 2 - camera)), tuple(a), tuple(b)))
    _, a, b = min(edges)
    return a, b, ("height" if axis == 2 else "length")


def _visible_point(views: Views, point, name: str | None) -> tuple[float, float]:
    """The point in the image, if the camera sees it (on ``name``, or on the floor when None)."""
    u, v, z = views.cameras[0].project([point])[0]
    if not (z > 0 and 0 <= u < WIDTH and 0 <= v < HEIGHT):
        raise Reject
    layer = views.layers[0]
    want = -1 if name is None else views.scene.names.index(name)
    ys, xs = slice(max(0, int(v) - 2), int(v) + 3), slice(max(0, int(u) - 2), int(u) + 3)
    if not (layer.object_ids[ys, xs] == want).any():
        raise Reject  # hidden behind something else
    return float(u), float(v)


def _floor_reference(views: Views, name: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """A visible 1 m run of floor-tile edge (REFERENCE_TILES tiles) next to the object: a scale."""
    obj = views.scene.object(name)
    tile, length = ROOM.floor_tile, ROOM.floor_tile * REFERENCE_TILES
    centre, camera = np.asarray(obj.position[:2]), np.asarray(views.cameras[0].position[:2])
    x0, y0 = (math.floor(c / tile) * tile for c in obj.position[:2])
    candidates = []
    for dx in range(-4, 5):
        for dy in range(-4, 5):
            start = (x0 + dx * tile, y0 + dy * tile)
            for end in ((start[0] + length, start[1]), (start[0], start[1] + length)):
                mid = (np.asarray(start) + np.asarray(end)) / 2
                # near the object first, then nearer the camera (drawn larger)
                rank = float(np.linalg.norm(mid - centre) + 0.1 * np.linalg.norm(mid - camera))
                candidates.append((rank, start, end))
    for _, start, end in sorted(candidates):
        inside = all(0 < p[0] < ROOM.size[0] and 0 < p[1] < ROOM.size[1] for p in (start, end))
        if not inside:
            continue
        mid = ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
        try:
            a, _, b = (_visible_point(views, (*p, 0.0), None) for p in (start, mid, end))
            return a, b
        except Reject:
            continue
    raise Reject


def object_size(rng, reflective: bool) -> tuple:
    views = corner_view(rng, sc.random_scene(rng, int(rng.integers(4, 7)), ROOM))
    large = [n for n in views.scene.names if views.shown_size(0, n) >= MIN_SIZE_BOX_SIDE]
    [name] = _pick(rng, large, 1)
    a, b, dimension = _longest_edge(views, name)
    edge = (_visible_point(views, a, name), _visible_point(views, b, name))
    reference = _floor_reference(views, name)
    cm = round(sc.object_size(views.scene.object(name)) * 100)
    question = (f"What is the length of the longest dimension (length, width, or height) of the {name}, measured in "
                f"centimeters? The floor tiles are {TILE_CM} cm squares.")
    steps = [
        PlanStep(f"I locate the {name} first.", OBJECT_MAPPER, [(0, box_op(views.bbox(0, name), name))]),
        PlanStep(f"The box on image {{latest[0]}} covers the {name}. I trace its longest edge, its {dimension}, and "
                 f"{REFERENCE_TILES} floor-tile edges next to it ({REFERENCE_CM} cm) as a scale reference.",
                 PATH_TRACER,
                 [(0, line_op(*edge, f"{name} {dimension}")), (0, line_op(*reference, f"{REFERENCE_CM} cm"))]),
    ]
    thought = (f"On image {{latest[0]}}, allowing for perspective, the {dimension} of the {name} is about "
               f"{cm / REFERENCE_CM:.2f} times the {REFERENCE_CM} cm reference, so it is about {cm} cm.")
    mistake = _box_mistake(rng, views, steps, [(0, name)]) if reflective else None
    return views, question, None, str(cm), steps, mistake, thought


# -- video -------------------------------------------------------------------------------------


def _plural(name: str) -> str:
    return name + ("es" if name.endswith(("x", "s")) else "s")


def _with_copies(rng, scene: sc.Scene, name: str, count: int) -> sc.Scene:
    """The scene with ``count`` identical objects called "<name> 1" .. "<name> <count>"."""
    original = scene.object(name)
    placed = [o for o in scene.objects if o.name != name]
    copies = [dataclasses.replace(original, name=f"{name} 1")]
    sx, sy, _ = ROOM.size
    half_x, half_y = original.size[0] / 2, original.size[1] / 2
    while len(copies) < count:
        for _ in range(MAX_TRIES):
            x = round(float(rng.uniform(half_x + 0.1, sx - half_x - 0.1)), 3)
            y = round(float(rng.uniform(half_y + 0.1, sy - half_y - 0.1)), 3)
            copy = dataclasses.replace(original, name=f"{name} {len(copies) + 1}",
                                       position=(x, y, original.position[2]))
            if sc.clear_of(copy, placed + copies):
                copies.append(copy)
                break
        else:
            raise Reject
    return sc.Scene(tuple(placed + copies), scene.room)


def _first_appearance_boxes(views: Views, names: list[str]) -> list[tuple[int, dict]]:
    return [(views.first_frame(n), box_op(views.bbox(views.first_frame(n), n), n)) for n in names]


def counting(rng, reflective: bool) -> tuple:
    base = sc.random_scene(rng, int(rng.integers(3, 6)), ROOM)
    category = base.names[int(rng.integers(len(base.names)))]
    count = int(rng.integers(2, 5))
    views = turning_video(rng, _with_copies(rng, base, category, count))
    copies = [f"{category} {i}" for i in range(1, count + 1)]
    if any(views.first_frame(c) is None for c in copies):
        raise Reject
    copies.sort(key=lambda c: (views.first_frame(c), c))
    ops = _first_appearance_boxes(views, copies)
    labelled = [(f, dict(op, label=f"{category} {i}")) for i, (f, op) in enumerate(ops, start=1)]
    frames = sorted({f + 1 for f, _ in ops})
    steps = [PlanStep(f"The camera turns in place, so the same {category} can appear in several frames. I box each "
                      f"{category} in the frame where it first appears (frames {', '.join(map(str, frames))}), "
                      "numbering them so none is counted twice.", OBJECT_MAPPER, labelled)]
    question = f"How many {_plural(category)} are in this room?"
    thought = (f"The boxes mark {count} different {_plural(category)}; the later frames show only these again, from "
               f"other angles. There are {count}.")
    mistake = None
    if reflective:
        at = int(rng.integers(len(copies)))
        frame = ops[at][0]
        wrong, reason = _shifted(views, frame, copies[at], labelled[at][1]["label"])
        mistake = Mistake(0, at, wrong, reason.replace(copies[at], category))
    return views, question, None, str(count), steps, mistake, thought


def appearance_order(rng, reflective: bool) -> tuple:
    views = turning_video(rng, sc.random_scene(rng, int(rng.integers(5, 8)), ROOM))
    by_frame: dict[int, list[str]] = {}
    for n in views.scene.names:
        if (f := views.first_frame(n)) is not None:
            by_frame.setdefault(f, []).append(n)
    if len(by_frame) < 4:
        raise Reject
    frames = sorted(int(f) for f in rng.choice(sorted(by_frame), size=4, replace=False))
    order = [by_frame[f][int(rng.integers(len(by_frame[f])))] for f in frames]
    asked = [order[i] for i in rng.permutation(4)]
    wrong = set()
    while len(wrong) < 3:
        perm = [order[i] for i in rng.permutation(4)]
        if perm != order:
            wrong.add(", ".join(perm))
    options, answer = multiple_choice(rng, ", ".join(order), sorted(wrong))
    question = ("What will be the first-time appearance order of the following categories in the video: "
                f"{', '.join(asked)}?")
    ops = _first_appearance_boxes(views, order)
    steps = [PlanStep(f"I look for the first frame in which each of the {', '.join(asked)} appears and box it there.",
                      OBJECT_MAPPER, ops)]
    seen_at = "; ".join(f"the {n} in frame {f + 1}" for n, f in zip(order, frames))
    thought = f"The boxes show the first appearances: {seen_at}. So the order is {', '.join(order)}, option {answer}."
    mistake = _box_mistake(rng, views, steps, [(f, n) for n, f in zip(order, frames)]) if reflective else None
    return views, question, options, answer, steps, mistake, thought


QUESTIONS = {
    "object_rel_direction": rel_direction,
    "object_rel_distance": rel_distance,
    "object_size_estimation": object_size,
    "object_counting": counting,
    "obj_appearance_order": appearance_order,
}


def scene_task(seed: int, index: int, reflective_share: float = 0.0) -> SynthTask:
    """Item ``index`` of the scene set with this seed (independent of how many are generated)."""
    if model_grid_size(WIDTH, HEIGHT) != (WIDTH, HEIGHT):
        raise ValueError("scene images must be in the model's grid")
    rng = np.random.default_rng([seed, index, 2])
    sub_task = SUB_TASKS[index % len(SUB_TASKS)]
    reflective = is_reflective_share(index, reflective_share)
    views, question, options, answer, steps, mistake, thought = until_unambiguous(
        lambda: QUESTIONS[sub_task](rng, reflective), f"{sub_task} scene (seed {seed}, item {index})", MAX_TRIES)
    dialogue = OracleDialogue(len(views.images))
    dialogue.play(steps, mistake)
    dialogue.answer(thought, answer)
    return SynthTask(
        id=f"scene_{index:05d}", question=question, options=options,
        problem_type="multiple choice" if options else "regression", answer=answer, sub_task=sub_task,
        images=views.images, turns=dialogue.turns, expected_new_images=dialogue.expected_new_images,
        reflective=reflective, kind="video" if len(views.images) > 1 else "single",
        ground_truth={"scene": views.scene.to_dict(), "cameras": [dataclasses.asdict(c) for c in views.cameras]})


def scene_tasks(n: int, seed: int, reflective_share: float = 0.0) -> Iterator[SynthTask]:
    for index in range(n):
        yield scene_task(seed, index, reflective_share)
