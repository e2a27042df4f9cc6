"""Make the bundled demo data: ``python -m ros_vilasr.demo.record [--out DIR]``.

Renders the demo scene (``layout``) through both rig cameras for 3 s at 10 Hz — colour, aligned
16UC1 depth and camera_info per camera, the robot crossing the floor — writes it as a
zstd-compressed MCAP rosbag2 (``demo_bag/``), the layout and questions with ground truth
(``scene.json``), and a recorded reasoning trace per question drawn on the key frame, and of
the standing question on every frame (``replay_transcript.jsonl``). Deterministic: running it
again reproduces the same files.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

from tqdm import tqdm

from ros_vilasr.core.engines.replay import thumbnail
from ros_vilasr.node.bag_writer import ImageBagWriter
from ros_vilasr.synth import scene as sc

from . import layout
from . import transcript as tr

log = logging.getLogger("ros_vilasr.demo.record")

BAG_NAME = "demo_bag"
SCENE_FILE = "scene.json"
TRANSCRIPT_FILE = "replay_transcript.jsonl"
DEFAULT_OUT = Path(__file__).resolve().parent / "data"


def render_frames(progress: bool = True) -> dict[str, list[sc.Rendering]]:
    """frame_id -> the rendering (image, depth, boxes) of each recording frame."""
    frames = {cam: [] for cam in layout.TOPICS}
    total = layout.N_FRAMES * len(layout.TOPICS)
    with tqdm(total=total, desc="rendering", unit="frame", disable=not progress) as bar:
        for i in range(layout.N_FRAMES):
            scene = layout.demo_scene(i)
            for cam in layout.TOPICS:
                frames[cam].append(sc.render_layers(scene, layout.camera(cam, i)))
                bar.update()
    return frames


def write_bag(path: Path, frames: dict[str, list[sc.Rendering]], storage: str = "mcap",
              compressed: bool = False) -> None:
    with ImageBagWriter(path, storage=storage) as bag:
        for i in range(layout.N_FRAMES):
            stamp = layout.stamp_ns(i)
            for cam, topic in layout.TOPICS.items():
                rendering = frames[cam][i]
                if compressed:
                    bag.write_compressed(topic + "/compressed", rendering.image, stamp, cam)
                else:
                    bag.write_image(topic, rendering.image, stamp, cam)
                bag.write_depth(layout.DEPTH_TOPICS[cam], rendering.depth, stamp, cam)
                c = layout.camera(cam, i)
                bag.write_camera_info(layout.INFO_TOPICS[cam], c.width, c.height, c.focal, stamp, cam)


def build_transcripts(scene: sc.Scene, frames: dict[str, list[sc.Rendering]]) -> list[dict]:
    floor_names = [o.name for o in scene.objects if sc.on_floor(o)]

    def turns(q, boxes, grids) -> list[str]:
        if q.question.startswith("Is the chair"):
            return tr.side_question_turns(q, boxes, grids)
        if q.question.startswith("How many"):
            return tr.count_question_turns(q, boxes, floor_names, scene.names)
        candidates = [o.split(". ", 1)[1] for o in q.options]
        return tr.nearest_question_turns(q, boxes, candidates, candidates[ord(q.answer) - ord("A")])

    records = [traced(q, frames, layout.REFERENCE_FRAME, turns) for q in layout.demo_questions(scene)]
    return records + watch_transcripts(frames)


def watch_transcripts(frames: dict[str, list[sc.Rendering]]) -> list[dict]:
    """The standing question traced on every frame of its camera, each with the frame's thumbnail
    (the replay engine picks the trace that looks like the frame asked about) and its own truth."""
    records = []
    for i in range(layout.N_FRAMES):
        q = replace(layout.WATCH, answer=layout.watch_truth(i))
        record = traced(q, frames, i, lambda q, boxes, grids: tr.watch_question_turns(q, boxes))
        records.append(record | {"thumbnail": thumbnail(frames[q.cameras[0]][i].image)})
    return records


def traced(q: layout.DemoQuestion, frames: dict[str, list[sc.Rendering]], frame: int, turns) -> dict:
    """The recorded trace of ``q`` on recording frame ``frame``, scripted by ``turns(q, boxes, grids)``
    from the objects' true boxes in the model grid, and checked by a real session."""
    images = [frames[cam][frame].image for cam in q.cameras]
    boxes, grids = tr.grid_boxes(images, [frames[cam][frame].boxes for cam in q.cameras])
    session = tr.replay_session(q, images, turns(q, boxes, grids))
    return {"question": q.question, "options": list(q.options), "problem_type": q.problem_type,
            "answer": q.answer, "cameras": list(q.cameras),
            "key_frame": {"index": frame, "stamp_ns": layout.stamp_ns(frame)},
            "model_grid": [list(g) for g in grids], "conversations": session.conversations()}


def scene_record(scene: sc.Scene) -> dict:
    ref = layout.REFERENCE_FRAME
    return {
        "description": "ros_vilasr demo: synthetic room seen by two cameras on a slowly moving rig, a robot "
                       "crossing the floor; units metres, world z up, camera yaw/pitch in degrees "
                       "(see ros_vilasr.synth.scene); the scene is the one at the key frame",
        "scene": scene.to_dict(),
        "topics": layout.TOPICS,
        "depth_topics": layout.DEPTH_TOPICS,
        "camera_info_topics": layout.INFO_TOPICS,
        "watch": {**asdict(layout.WATCH), "answer_per_frame": [layout.watch_truth(i) for i in range(layout.N_FRAMES)]},
        "frame_rate_hz": layout.FRAME_RATE_HZ,
        "frames": layout.N_FRAMES,
        "start_stamp_ns": layout.START_STAMP_NS,
        "key_frame": ref,
        "cameras_at_key_frame": {cam: asdict(layout.camera(cam, ref)) for cam in layout.TOPICS},
        # every frame's exact camera pose (world position, yaw / pitch) and the robot's position
        "camera_poses": {cam: [{k: v for k, v in asdict(layout.camera(cam, i)).items()
                                if k in ("position", "yaw", "pitch")} for i in range(layout.N_FRAMES)]
                         for cam in layout.TOPICS},
        "robot_positions": [list(layout.demo_scene(i).object("robot").position) for i in range(layout.N_FRAMES)],
        "questions": [asdict(q) for q in layout.demo_questions(scene)],
    }


def record(out: Path, storage: str = "mcap", compressed: bool = False, progress: bool = True) -> dict:
    """Write all demo data into ``out``; returns the sizes written (bytes)."""
    scene = layout.demo_scene()
    frames = render_frames(progress)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        tmp_bag = Path(tmp) / BAG_NAME
        write_bag(tmp_bag, frames, storage, compressed)
        bag = out / BAG_NAME
        if bag.exists():
            shutil.rmtree(bag)
        tmp_bag.rename(bag)
    (out / SCENE_FILE).write_text(json.dumps(scene_record(scene), indent=1) + "\n")
    records = build_transcripts(scene, frames)
    (out / TRANSCRIPT_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    sizes = {p.name: p.stat().st_size for p in sorted(bag.iterdir())}
    sizes.update({name: (out / name).stat().st_size for name in (SCENE_FILE, TRANSCRIPT_FILE)})
    return sizes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ros_vilasr.demo.record", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    p.add_argument("--compressed", action="store_true",
                   help="write JPEG sensor_msgs/CompressedImage topics (<topic>/compressed) instead of raw")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    sizes = record(args.out, args.storage, args.compressed)
    for name, size in sizes.items():
        log.info("%-28s %9.1f kB", name, size / 1e3)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
