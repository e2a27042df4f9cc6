"""The demo's world: a known room, two cameras on a slowly moving rig (colour, aligned depth and
camera_info each), a robot that crosses the floor during the recording, and the demo questions
with their ground truth computed from the scene (never typed in by hand)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ros_vilasr.synth import scene as sc

WIDTH, HEIGHT = 640, 480
FRAME_RATE_HZ = 10
N_FRAMES = 30  # 3 s per camera
START_STAMP_NS = 1_750_000_000 * 1_000_000_000  # fixed, so the recording is reproducible
# Key frame the recorded traces were drawn on; the rig moves little, so any frame is close.
REFERENCE_FRAME = N_FRAMES // 2

TOPICS = {"cam_left": "/cam_left/image_raw", "cam_right": "/cam_right/image_raw"}
DEPTH_TOPICS = {cam: f"/{cam}/depth/image_raw" for cam in TOPICS}  # 16UC1 mm, aligned to colour
INFO_TOPICS = {cam: f"/{cam}/camera_info" for cam in TOPICS}

# The robot crosses the floor in front of the table between these frames (then the loop restarts).
ROBOT_PATH = ((2.3, 1.9), (3.9, 1.9))  # (x, y) start and end, metres
ROBOT_MOVES = (10, 20)  # first and last frame of the crossing

# Rig: both cameras 1.5 m high, 1.2 m apart, toed in by 12 degrees, tilted 22 degrees down.
_RIG_MOUNTS = {"cam_left": (-0.6, 12.0), "cam_right": (0.6, -12.0)}  # lateral offset m, toe-in deg
_RIG_START = (3.0, 0.2, 1.5)
_RIG_FORWARD_M = 0.08  # over the whole recording
_RIG_SWAY_DEG = 0.6


def demo_scene(frame: int = REFERENCE_FRAME) -> sc.Scene:
    """The room at recording frame ``frame`` (only the robot moves)."""
    start, end = ROBOT_MOVES
    t = min(max((frame - start) / (end - start), 0.0), 1.0)
    (x0, y0), (x1, y1) = ROBOT_PATH
    return sc.Scene((
        sc.SceneObject("table", (139, 90, 43), (3.0, 2.8, 0.375), (1.4, 0.8, 0.75)),
        sc.SceneObject("red cube", (220, 30, 30), (2.7, 2.8, 0.85), (0.2, 0.2, 0.2)),
        sc.SceneObject("chair", (40, 80, 200), (1.7, 2.3, 0.45), (0.5, 0.5, 0.9)),
        sc.SceneObject("lamp", (230, 200, 60), (4.3, 3.9, 0.8), (0.3, 0.3, 1.6)),
        sc.SceneObject("crate", (60, 160, 70), (4.6, 3.0, 0.25), (0.5, 0.5, 0.5)),
        sc.SceneObject("robot", (240, 120, 20), (x0 + t * (x1 - x0), y0 + t * (y1 - y0), 0.2), (0.4, 0.4, 0.4)),
    ), sc.Room(size=(6.0, 5.0, 2.8)))


def stamp_ns(frame: int) -> int:
    return START_STAMP_NS + frame * 1_000_000_000 // FRAME_RATE_HZ


def camera(frame_id: str, frame: int) -> sc.Camera:
    """``frame_id``'s camera at recording frame ``frame``: the rig creeps forward and sways."""
    lateral, toe_in = _RIG_MOUNTS[frame_id]
    progress = frame / max(N_FRAMES - 1, 1)
    sway = _RIG_SWAY_DEG * math.sin(2 * math.pi * progress)
    x, y, z = _RIG_START
    return sc.Camera((x + lateral, y + _RIG_FORWARD_M * progress, z), 90.0 - toe_in + sway, 22.0,
                     fov_deg=75.0, width=WIDTH, height=HEIGHT)


@dataclass(frozen=True)
class DemoQuestion:
    question: str
    options: tuple[str, ...]
    problem_type: str
    cameras: tuple[str, ...]  # frame_ids, in image order
    answer: str  # ground truth, in the form the model must answer
    why: str  # the ground truth in words


def _letter(options: tuple[str, ...], value: str) -> str:
    return next(o.split(".")[0] for o in options if o.split(". ", 1)[1] == value)


def demo_questions(scene: sc.Scene | None = None) -> list[DemoQuestion]:
    scene = scene or demo_scene()
    table, chair, lamp = scene.object("table"), scene.object("chair"), scene.object("lamp")
    left_cam = camera("cam_left", REFERENCE_FRAME)

    side = sc.side_in_view(left_cam, table, chair)
    side_options = ("A. left", "B. right")

    on_floor = [o.name for o in scene.objects if sc.on_floor(o)]

    candidates = ["table", "red cube", "chair", "crate"]
    nearest = sc.closest_object(scene, "lamp", candidates)
    if nearest != sc.closest_object(scene, "lamp", candidates, measure=sc.center_distance):
        raise AssertionError("demo layout: 'closest' must not depend on the distance measure")
    near_options = tuple(f"{chr(65 + i)}. {name}" for i, name in enumerate(candidates))
    gaps = ", ".join(f"{n} {sc.object_distance(lamp, scene.object(n)):.2f} m" for n in candidates)

    return [
        DemoQuestion("Is the chair to the left or right of the table from the left camera's view?",
                     side_options, "multiple choice", ("cam_left",), _letter(side_options, side),
                     f"the chair appears to the {side} of the table in cam_left"),
        DemoQuestion("How many objects are on the floor?", (), "numerical", ("cam_left", "cam_right"),
                     str(len(on_floor)), f"on the floor: {', '.join(on_floor)}"),
        DemoQuestion("Which object is closest to the lamp?", near_options, "multiple choice",
                     ("cam_left", "cam_right"), _letter(near_options, nearest),
                     f"gap to the lamp: {gaps}"),
    ]


WATCH = DemoQuestion("Is the robot to the left or right of the table from the left camera's view?",
                     ("A. left", "B. right"), "multiple choice", ("cam_left",), "", "")


def watch_truth(frame: int) -> str:
    """The standing question's answer at recording frame ``frame``: the robot crosses the table."""
    scene = demo_scene(frame)
    side = sc.side_in_view(camera("cam_left", frame), scene.object("table"), scene.object("robot"))
    return _letter(WATCH.options, side)


def frame_at(stamp: int) -> int:
    """The recording frame of a header stamp in ns (the bag player keeps recorded stamps)."""
    return round((stamp - START_STAMP_NS) * FRAME_RATE_HZ / 1e9) % N_FRAMES
