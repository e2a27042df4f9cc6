"""The demo's questions in random rooms (``synth.rig_tasks``): ground truth from the renderer's
geometry, frames exactly as the node would hand them to the model, oracle trajectories that run
through the core and score 100%."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ros_vilasr.core.images import MAX_PIXELS_TRAIN, prepare_image
from ros_vilasr.synth import rig_tasks as rt
from ros_vilasr.synth import scene as sc
from ros_vilasr.synth.trajectories import write_dataset

N = 9  # three of each sub-task


@pytest.fixture(scope="module")
def tasks():
    return list(rt.rig_tasks(N, seed=11))


def _scene_and_cameras(task):
    scene = sc.Scene.from_dict(task.ground_truth["scene"])
    return scene, [sc.Camera(**{k: tuple(v) if isinstance(v, list) else v for k, v in c.items()})
                   for c in task.ground_truth["cameras"]]


def test_answers_follow_from_the_scene_geometry(tasks):
    assert [t.sub_task for t in tasks] == list(rt.SUB_TASKS) * 3
    for task in tasks:
        scene, cameras = _scene_and_cameras(task)
        if task.sub_task == "rig_side":
            target, reference = task.question.split("Is the ")[1].split(" to the left or right of the ")
            reference = reference.split(" from the ")[0]
            side = sc.side_in_view(cameras[0], scene.object(reference), scene.object(target))
            assert task.answer == ("A" if side == "left" else "B") and task.options == ["A. left", "B. right"]
        elif task.sub_task == "rig_nearest":
            ref = task.question.removeprefix("Which object is closest to the ").removesuffix("?")
            candidates = [o.split(". ", 1)[1] for o in task.options]
            closest = sc.closest_object(scene, ref, candidates)
            assert task.options[ord(task.answer) - 65].endswith(f". {closest}")
        else:
            assert task.answer == str(sum(sc.on_floor(o) for o in scene.objects))
            assert task.problem_type == "numerical" and task.options is None


def test_the_demo_room_is_made_of_the_training_world():
    """Every object of the demo's room (the robot too) appears in training rooms, looking the same."""
    from ros_vilasr.demo import layout
    known = {name: (color, size) for name, color, size in (*sc.CATALOG, rt.CUBE, rt.ROBOT)}
    for obj in layout.demo_scene().objects:
        assert obj.name in known and obj.color == known[obj.name][0], obj.name
    assert layout.demo_scene().object("robot").size == rt.ROBOT[2]
    scenes = [rt.random_rig_scene(np.random.default_rng(seed), sc.Room(size=(6.0, 5.0, 2.8))) for seed in range(12)]
    robots = [s.object("robot") for s in scenes if "robot" in s.names]
    assert 0 < len(robots) < len(scenes) and all(sc.on_floor(r) for r in robots)
    for scene in scenes:
        for i, a in enumerate(scene.objects):
            assert all(sc.object_distance(a, b) >= 0.1 for b in scene.objects[i + 1:] if "cube" not in a.name + b.name)


def test_frames_are_what_the_node_gives_the_model(tasks):
    """A 640x480 camera frame smart-resized at the training budget, pixel for pixel."""
    for task in tasks[:3]:
        scene, cameras = _scene_and_cameras(task)
        for camera, image in zip(cameras, task.images):
            assert (camera.width, camera.height) == rt.CAMERA_SIZE
            frame, _ = sc.render(scene, camera)
            model_image = prepare_image(frame, MAX_PIXELS_TRAIN)
            assert model_image.size == rt.GRID == (504, 364)
            assert np.array_equal(np.asarray(model_image.image), np.asarray(image))


def test_floor_counts_box_every_floor_object_once_and_skip_the_cube(tasks):
    for task in (t for t in tasks if t.sub_task == "rig_floor_count"):
        scene, _ = _scene_and_cameras(task)
        ops = json.loads(task.turns[0].split("```json\n")[1].split("\n```")[0])
        labels = [op["label"] for op in ops]
        assert sorted(labels) == sorted(o.name for o in scene.objects if sc.on_floor(o))
        assert rt.CUBE[0] not in labels


def test_oracle_trajectories_execute_and_score_and_are_reproducible(tmp_path, tasks):
    # write_dataset replays every trajectory through a real Session and checks that it draws the
    # planned images, is well formed and scores 1 (it raises otherwise)
    stats = write_dataset(tasks, tmp_path / "a")
    assert stats["items"] == N and stats["drawn_images"] == sum(len(t.expected_new_images[0]) for t in tasks) + sum(
        len(t.expected_new_images[1]) for t in tasks if t.sub_task == "rig_nearest")
    write_dataset(rt.rig_tasks(N, seed=11), tmp_path / "b")
    for name in ("eval.json", "trajectories.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    other = rt.rig_task(12, 0)
    assert other.question != tasks[0].question or other.images[0].tobytes() != tasks[0].images[0].tobytes()


# -- metric and cross-view questions (synth.rig_metric) ----------------------------------------------

@pytest.fixture(scope="module")
def metric():
    from ros_vilasr.synth import rig_metric as rm
    return list(rm.metric_tasks(8, seed=13))


def _between(question: str, before: str, middle: str, after: str) -> tuple[str, str]:
    first, second = question.split(before, 1)[1].split(middle, 1)
    return first, second.split(after, 1)[0]


def test_metric_answers_follow_from_the_scene_geometry(metric):
    from ros_vilasr.synth import rig_metric as rm
    assert [t.sub_task for t in metric] == list(rm.SUB_TASKS) * 2
    for task in metric:
        scene, cameras = _scene_and_cameras(task)
        if task.sub_task == "rig_cross_nearest":
            ref = task.question.split("closest to the ")[1].split(" seen by the ")[0]
            candidates = [o.split(". ", 1)[1] for o in task.options]
            assert len(task.images) == 2 and len(candidates) == 3
            assert task.options[ord(task.answer) - 65].endswith(f". {sc.closest_object(scene, ref, candidates)}")
        elif task.sub_task == "rig_distance":
            a, b = _between(task.question, "How far apart are the ", " and the ", " (closest points)")
            assert task.problem_type == "regression"
            assert float(task.answer) == pytest.approx(sc.object_distance(scene.object(a), scene.object(b)), abs=0.05)
        elif task.sub_task == "rig_room_size":
            assert float(task.answer) == pytest.approx(sc.room_area(scene.room), abs=0.5)
        else:
            start, rest = _between(task.question, "stand by the ", " facing the ", ", is the")
            target = task.question.split(", is the ")[1].split(" to your left")[0]
            side = sc.relative_direction(scene.object(start).position, scene.object(rest).position,
                                         scene.object(target).position, "lr")
            assert task.answer == ("A" if side == "left" else "B")


def test_metric_oracles_execute_and_score_and_prompts_are_written_for_rl(tmp_path, metric):
    stats = write_dataset(metric, tmp_path / "m")  # raises unless every trajectory runs and scores 1
    items = json.loads((tmp_path / "m" / "eval.json").read_text())
    prompts = [json.loads(line) for line in (tmp_path / "m" / "prompts.jsonl").read_text().splitlines()]
    assert stats["items"] == len(items) == len(prompts) == 8 and prompts == items
    assert all(p["answer"] and p["image_path"] and "conversations" not in p for p in prompts)
