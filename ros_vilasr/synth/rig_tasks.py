"""The demo's questions in rooms it has never seen: a two-camera rig looks into a random room.

Same set-up as the bundled recording (``demo.layout``): two cameras 1.2 m apart, toed in, tilted
down, 640x480 frames; here the room, its furniture, the rig's pose, an optional small cube on top
of a piece of furniture and whether the demo's robot stands on the floor are random, so a model
trained on these never sees the demo's room.
Frames are rendered at the cameras' 640x480 and resized the way a session resizes them at the
training pixel budget (``GRID``), so the model meets exactly what the node gives it.

Sub-tasks, each with an oracle that boxes the objects it needs and settles the question from the
drawings: ``rig_side`` (is A left or right of B in one camera's view), ``rig_nearest`` (which
candidate is closest to an object, with lines to each) and ``rig_floor_count`` (how many objects
stand on the floor, each boxed once across both views).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import numpy as np
from PIL import Image

from ros_vilasr.core.images import MAX_PIXELS_TRAIN, resized_size
from ros_vilasr.core.protocol import OBJECT_MAPPER, PATH_TRACER

from . import scene as sc
from .trajectories import OracleDialogue, PlanStep, Reject, SynthTask, box_op, lettered, line_op, until_unambiguous

CAMERA_SIZE = (640, 480)  # what the rig's cameras publish (the demo recording's size)
GRID = resized_size(*CAMERA_SIZE, MAX_PIXELS_TRAIN)  # what the model sees: 504x364
CAMERAS = ("left", "right")
MOUNTS = {"left": (-0.6, 12.0), "right": (0.6, -12.0)}  # lateral offset m, toe-in deg (as the demo)
CUBE = ("red cube", (220, 30, 30), (0.2, 0.2, 0.2))
SUPPORTS = ("table", "crate", "box", "cabinet", "bed")  # what a cube may stand on
ROBOT = ("robot", (240, 120, 20), (0.4, 0.4, 0.4))  # the demo's mobile robot, roaming some rooms
MIN_BOX_SIDE = 14  # grid pixels: smaller visible boxes do not count as clearly visible
SIDE_MARGIN = 24  # grid pixels between the two centres of a side question
DISTANCE_MARGIN = 0.3  # metres between the closest and the second closest candidate
MAX_TRIES = 200
SUB_TASKS = ("rig_side", "rig_nearest", "rig_floor_count")


@dataclasses.dataclass
class RigViews:
    scene: sc.Scene
    cameras: list[sc.Camera]
    images: list[Image.Image]  # in the model's grid
    boxes: list[dict[str, list[int] | None]]  # per camera: grid-pixel box (x2, y2 inclusive) or None
    object_ids: list[np.ndarray]  # per camera, in camera pixels: index into scene.objects, -1 for the room

    def visible(self, cam: int, name: str) -> bool:
        box = self.boxes[cam][name]
        return box is not None and min(box[2] - box[0], box[3] - box[1]) >= MIN_BOX_SIDE

    def first_camera(self, name: str) -> int | None:
        return next((c for c in range(len(self.cameras)) if self.visible(c, name)), None)

    def floor_point(self, cam: int, name: str) -> tuple[float, float]:
        """Where the object stands in the grid: its footprint centre, or its box's bottom centre."""
        obj, camera = self.scene.object(name), self.cameras[cam]
        u, v, z = camera.project([(obj.position[0], obj.position[1], obj.bottom)])[0]
        sx, sy = GRID[0] / camera.width, GRID[1] / camera.height
        if z > 0 and 0 <= u < camera.width and 0 <= v < camera.height:
            return u * sx, v * sy
        x1, _, x2, y2 = self.boxes[cam][name]
        return (x1 + x2) / 2, float(y2)


def rig_cameras(rng) -> tuple[sc.Room, list[sc.Camera]]:
    """The rig at a random spot near a random wall, looking into the room."""
    room = sc.Room(size=(round(float(rng.uniform(5.0, 7.0)), 2), round(float(rng.uniform(4.0, 6.0)), 2), 2.8))
    wall = int(rng.integers(4))
    sx, sy = room.size[:2]
    along = float(rng.uniform(0.35, 0.65))
    # (position, yaw) on walls y=0, x=sx, y=sy, x=0, facing inward
    x, y, yaw = [(sx * along, 0.2, 90.0), (sx - 0.2, sy * along, 180.0), (sx * along, sy - 0.2, 270.0),
                 (0.2, sy * along, 0.0)][wall]
    yaw += float(rng.uniform(-10, 10))
    pitch, height = float(rng.uniform(18, 26)), float(rng.uniform(1.3, 1.7))
    cameras = []
    for name in CAMERAS:
        lateral, toe_in = MOUNTS[name]
        right = (math.sin(math.radians(yaw)), -math.cos(math.radians(yaw)))
        cameras.append(sc.Camera((x + lateral * right[0], y + lateral * right[1], height), yaw - toe_in, pitch,
                                 fov_deg=75.0, width=CAMERA_SIZE[0], height=CAMERA_SIZE[1]))
    return room, cameras


def random_rig_scene(rng, room: sc.Room) -> sc.Scene:
    try:
        scene = sc.random_scene(rng, int(rng.integers(5, 8)), room)
    except RuntimeError:  # this much furniture does not fit this room
        raise Reject from None
    supports = [o for o in scene.objects if o.name in SUPPORTS]
    if supports and rng.random() < 0.5:
        base = supports[int(rng.integers(len(supports)))]
        name, color, size = CUBE
        cube = sc.SceneObject(name, color, (base.position[0], base.position[1], base.top + size[2] / 2), size)
        scene = sc.Scene((*scene.objects, cube), room)
    if rng.random() < 0.5:
        scene = _with_robot(rng, scene)
    return scene


def _with_robot(rng, scene: sc.Scene) -> sc.Scene:
    """``scene`` with the robot somewhere on its floor, clear of the furniture (or unchanged)."""
    for _ in range(50):
        robot = sc.floor_spot(rng, *ROBOT, scene.room)
        if sc.clear_of(robot, scene.objects):
            return sc.Scene((*scene.objects, robot), scene.room)
    return scene


def render_views(scene: sc.Scene, cameras: list[sc.Camera]) -> RigViews:
    images, boxes, object_ids = [], [], []
    for camera in cameras:
        layers = sc.render_layers(scene, camera)
        object_ids.append(layers.object_ids)
        sx, sy = GRID[0] / camera.width, GRID[1] / camera.height
        images.append(layers.image.resize(GRID, Image.Resampling.BICUBIC))  # as prepare_image does
        boxes.append({n: None if b is None else [round(b[0] * sx), round(b[1] * sy), round((b[2] - 1) * sx),
                                                 round((b[3] - 1) * sy)] for n, b in layers.boxes.items()})
    return RigViews(scene, cameras, images, boxes, object_ids)


def _centre_x(box: list[int]) -> int:
    return round((box[0] + box[2]) / 2)


def side(rng, views: RigViews):
    cam = int(rng.integers(2))
    seen = [n for n in views.scene.names if views.visible(cam, n)]
    if len(seen) < 2:
        raise Reject
    target, reference = (seen[i] for i in rng.choice(len(seen), 2, replace=False))
    truth = sc.side_in_view(views.cameras[cam], views.scene.object(reference), views.scene.object(target))
    xt, xr = _centre_x(views.boxes[cam][target]), _centre_x(views.boxes[cam][reference])
    if abs(xt - xr) < SIDE_MARGIN or (xt < xr) != (truth == "left"):
        raise Reject  # too close to call, or the visible boxes disagree with the 3-D centres
    options = ["A. left", "B. right"]
    answer = "A" if truth == "left" else "B"
    question = f"Is the {target} to the left or right of the {reference} from the {CAMERAS[cam]} camera's view?"
    steps = [PlanStep(f"I need the positions of the {target} and the {reference} in the image. I mark both.",
                      OBJECT_MAPPER, [(0, box_op(views.boxes[cam][n], n)) for n in (target, reference)])]
    thought = (f"On image {{latest[0]}} the {target} is centred at x = {xt} and the {reference} at x = {xr}, so the "
               f"{target} is to the {truth} of the {reference}: option {answer}.")
    return [cam], question, options, "multiple choice", answer, steps, thought


def nearest(rng, views: RigViews):
    cam = int(rng.integers(2))
    seen = [n for n in views.scene.names if views.visible(cam, n) and n != CUBE[0]]
    if len(seen) < 5:
        raise Reject
    ref, *candidates = (seen[i] for i in rng.choice(len(seen), 5, replace=False))
    scene = views.scene
    dist = {c: sc.object_distance(scene.object(ref), scene.object(c)) for c in candidates}
    closest, second = sorted(candidates, key=dist.get)[:2]
    if dist[second] - dist[closest] < DISTANCE_MARGIN or closest != sc.closest_object(
            scene, ref, candidates, measure=sc.center_distance):
        raise Reject
    options, answer = lettered(candidates, closest)
    steps = [
        PlanStep(f"I locate the {ref} and the four candidates in the {CAMERAS[cam]} camera's image.", OBJECT_MAPPER,
                 [(cam, box_op(views.boxes[cam][n], n)) for n in (ref, *candidates)]),
        PlanStep(f"The boxes on image {{latest[{cam}]}} sit on the right objects. I connect where the {ref} stands "
                 "with where each candidate stands.", PATH_TRACER,
                 [(cam, line_op(views.floor_point(cam, ref), views.floor_point(cam, c), f"to {c}"))
                  for c in candidates]),
    ]
    thought = (f"On image {{latest[{cam}]}} the shortest line is the one to the {closest}, about {dist[closest]:.1f} m "
               f"from the {ref}; the next, to the {second}, is about {dist[second]:.1f} m. Option {answer}.")
    return [0, 1], f"Which object is closest to the {ref}?", options, "multiple choice", answer, steps, thought


def floor_count(rng, views: RigViews):
    names = views.scene.names
    first = {n: views.first_camera(n) for n in names}
    if any(f is None for f in first.values()):
        raise Reject  # an object neither camera shows clearly: the count is not answerable
    on_floor = [n for n in names if sc.on_floor(views.scene.object(n))]
    raised = [n for n in names if n not in on_floor]
    ops = [(first[n], box_op(views.boxes[first[n]][n], n)) for n in on_floor]
    ops.sort(key=lambda op: (op[0], op[1]["bbox_2d"][0]))
    steps = [PlanStep("The two cameras overlap, so I box each object that stands on the floor once, in the first "
                      "image that shows it.", OBJECT_MAPPER, ops)]
    held = (f" The {raised[0]} is not on the floor: it stands on the "
            f"{_support(views.scene, raised[0])}." if raised else "")
    boxed = ", ".join(op["label"] for _, op in ops)
    thought = f"I boxed {len(on_floor)} objects on the floor: {boxed}.{held} There are {len(on_floor)}."
    return [0, 1], "How many objects are on the floor?", [], "numerical", str(len(on_floor)), steps, thought


def _support(scene: sc.Scene, name: str) -> str:
    obj = scene.object(name)
    below = [o for o in scene.objects if o.name != name and abs(o.top - obj.bottom) < 1e-6]
    return below[0].name if below else "floor"


QUESTIONS = {"rig_side": side, "rig_nearest": nearest, "rig_floor_count": floor_count}


def rig_task(seed: int, index: int, reflective_share: float = 0.0, questions: dict = QUESTIONS,
             salt: int = 3) -> SynthTask:
    """Item ``index`` of the rig set with this seed (independent of how many are generated), its
    sub-task the ``index``-th of ``questions`` in turn (``rig_metric`` brings its own, and its own
    ``salt`` for the random state). Rig trajectories are never reflective: ``reflective_share``
    keeps the generators' common signature."""
    rng = np.random.default_rng([seed, index, salt])
    sub_task = list(questions)[index % len(questions)]

    def attempt():
        room, cameras = rig_cameras(rng)
        views = render_views(random_rig_scene(rng, room), cameras)
        return views, *questions[sub_task](rng, views)

    views, used, question, options, problem_type, answer, steps, thought = until_unambiguous(
        attempt, f"{sub_task} scene (seed {seed}, item {index})", MAX_TRIES)
    dialogue = OracleDialogue(len(used))
    dialogue.play(steps)
    dialogue.answer(thought, answer)
    return SynthTask(
        id=f"rig_{index:05d}", question=question, options=options or None, problem_type=problem_type,
        answer=answer, sub_task=sub_task, images=[views.images[c] for c in used], turns=dialogue.turns,
        expected_new_images=dialogue.expected_new_images, kind="views" if len(used) > 1 else "single",
        ground_truth={"scene": views.scene.to_dict(),
                      "cameras": [dataclasses.asdict(views.cameras[c]) for c in used]})


def rig_tasks(n: int, seed: int, reflective_share: float = 0.0) -> Iterator[SynthTask]:
    for index in range(n):
        yield rig_task(seed, index, reflective_share)
