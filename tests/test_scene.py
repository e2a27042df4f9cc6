"""The synthetic scene renderer and the bundled demo data built from it.

Renderer: deterministic, boxes where geometry says, occlusion by depth. Bundled data: the bag holds
exactly what the renderer makes, and every drawing in the recorded reasoning traces is the
ground-truth box of its object (in the model's grid of the key frame).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ros_vilasr.core import protocol
from ros_vilasr.core.images import MAX_PIXELS_EVAL, resized_size
from ros_vilasr.demo import layout
from ros_vilasr.demo import transcript as tr
from ros_vilasr.demo.record import BAG_NAME, DEFAULT_OUT, SCENE_FILE, TRANSCRIPT_FILE
from ros_vilasr.synth import scene as sc

DATA = DEFAULT_OUT
RED, BLUE = (220, 30, 30), (40, 80, 200)


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def one_box(*objects):
    return sc.Scene(tuple(objects), sc.Room(size=(10.0, 10.0, 3.0)))


FRONT = sc.Camera((5.0, 1.0, 1.0), yaw=90.0, pitch=0.0, fov_deg=60.0, width=320, height=240)


# -- renderer ---------------------------------------------------------------------------------------

def test_render_is_deterministic():
    scene = sc.random_scene(7, 6)
    assert scene == sc.random_scene(7, 6)
    assert scene != sc.random_scene(8, 6)
    cam = sc.Camera((5.0, 0.3, 1.6), yaw=80.0, pitch=20.0, width=160, height=120)
    a, boxes_a = sc.render(scene, cam)
    b, boxes_b = sc.render(scene, cam)
    assert a.tobytes() == b.tobytes() and boxes_a == boxes_b
    assert a.size == (160, 120) and a.mode == "RGB"


def test_object_straight_ahead_is_centred_and_sized_by_the_pinhole_model():
    cube = sc.SceneObject("cube", RED, (5.0, 5.0, 1.0), (1.0, 1.0, 1.0))
    image, boxes = sc.render(one_box(cube), FRONT)
    x1, y1, x2, y2 = boxes["cube"]
    assert abs((x1 + x2) / 2 - 160) <= 1 and abs((y1 + y2) / 2 - 120) <= 1
    # The front face is 3.5 m away: 1 m spans focal / 3.5 pixels.
    assert abs((x2 - x1) - FRONT.focal / 3.5) <= 2
    r, g, b = image.getpixel((160, 120))
    assert r > 2 * g and r > 2 * b  # the red cube, shaded


def test_objects_out_of_view_or_behind_have_no_box():
    behind = sc.SceneObject("behind", RED, (5.0, 0.5, 1.0), (0.3, 0.3, 0.3))
    aside = sc.SceneObject("aside", BLUE, (9.5, 2.0, 1.0), (0.3, 0.3, 0.3))
    _, boxes = sc.render(one_box(behind, aside), FRONT)
    assert boxes == {"behind": None, "aside": None}


def test_occlusion_follows_depth_not_list_order():
    near = sc.SceneObject("near", BLUE, (5.0, 3.0, 1.0), (0.4, 0.2, 1.0))
    far = sc.SceneObject("far", RED, (5.0, 6.0, 1.0), (0.5, 0.5, 0.5))  # fully behind "near"
    for order in ((near, far), (far, near)):
        _, boxes = sc.render(one_box(*order), FRONT)
        assert boxes["far"] is None and boxes["near"] is not None
    half_hidden = sc.SceneObject("far", RED, (5.6, 6.0, 1.0), (0.6, 0.5, 0.5))
    _, alone = sc.render(one_box(half_hidden), FRONT)
    _, behind = sc.render(one_box(near, half_hidden), FRONT)
    assert behind["far"][2] - behind["far"][0] < alone["far"][2] - alone["far"][0]
    assert behind["far"][0] >= behind["near"][2] - 1  # only the part right of the occluder shows


def test_stacked_object_is_seen_on_top():
    table = sc.SceneObject("table", BLUE, (5.0, 4.0, 0.4), (1.2, 0.8, 0.8))
    cube = sc.SceneObject("cube", RED, (5.0, 4.0, 0.9), (0.2, 0.2, 0.2))
    above = sc.Camera((5.0, 2.0, 2.5), yaw=90.0, pitch=45.0, width=320, height=240)
    layers = sc.render_layers(one_box(table, cube), above)
    x1, y1, x2, y2 = layers.boxes["cube"]
    tx1, ty1, tx2, ty2 = layers.boxes["table"]
    assert tx1 < x1 < x2 < tx2 and ty1 <= y1
    assert (layers.object_ids == 1).sum() > 50
    assert np.isfinite(layers.depth[y1:y2, x1:x2]).all()


def test_projected_centre_lies_in_its_visible_box():
    scene = sc.random_scene(3, 5)
    cam = sc.Camera((3.0, 0.2, 1.5), yaw=90.0, pitch=20.0, fov_deg=80.0)
    _, boxes = sc.render(scene, cam)
    visible = [o for o in scene.objects if boxes[o.name]]
    assert visible
    for obj in visible:
        u, v, z = cam.project([obj.position])[0]
        x1, y1, x2, y2 = boxes[obj.name]
        if z > 0 and 0 <= u < cam.width and 0 <= v < cam.height:
            assert x1 - 1 <= u <= x2 + 1 and y1 - 1 <= v <= y2 + 1, obj.name


def test_ground_truth_helpers():
    a = sc.SceneObject("a", RED, (0.0, 0.0, 0.5), (1.0, 1.0, 1.0))
    b = sc.SceneObject("b", BLUE, (3.0, 4.0, 0.5), (1.0, 1.0, 1.0))
    c = sc.SceneObject("c", BLUE, (1.0, 0.0, 1.5), (1.0, 1.0, 1.0))  # touches a's corner edge
    assert sc.center_distance(a, b) == pytest.approx(5.0)
    assert sc.object_distance(a, b) == pytest.approx(math.hypot(2.0, 3.0))
    assert sc.object_distance(a, c) == 0.0
    assert sc.object_size(sc.SceneObject("t", RED, (0, 0, 0), (1.4, 0.8, 0.75))) == 1.4
    assert sc.on_floor(a) and not sc.on_floor(c)
    scene = sc.Scene((a, b, c))
    assert sc.closest_object(scene, "a") == "c"
    assert sc.closest_object(scene, "a", ["b"]) == "b"
    assert sc.room_area(sc.Room(size=(6.0, 5.0, 2.8))) == 30.0
    # Standing at the origin facing +y: +x is to the right, -x to the left, -y behind.
    assert sc.relative_direction((0, 0, 0), (0, 1, 0), (1, 1, 0)) == "right"
    assert sc.relative_direction((0, 0, 0), (0, 1, 0), (-1, 1, 0)) == "left"
    assert sc.relative_direction((0, 0, 0), (0, 1, 0), (0.2, -1, 0), "lrb") == "back"
    assert sc.relative_direction((0, 0, 0), (0, 1, 0), (-1, -1, 0), "quadrant") == "back-left"
    assert sc.bearing_deg((0, 0, 0), (0, 1, 0), (-1, 0, 0)) == pytest.approx(90.0)
    left = sc.SceneObject("l", RED, (4.0, 5.0, 1.0), (0.5, 0.5, 0.5))
    right = sc.SceneObject("r", RED, (6.0, 5.0, 1.0), (0.5, 0.5, 0.5))
    assert sc.side_in_view(FRONT, right, left) == "left"
    assert sc.side_in_view(FRONT, left, right) == "right"


def test_scene_dict_round_trip():
    scene = sc.random_scene(11, 4)
    assert sc.Scene.from_dict(json.loads(json.dumps(scene.to_dict()))) == scene


# -- bundled demo data ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bundled():
    from rosbags.rosbag2 import Reader

    frames = {}
    with Reader(DATA / BAG_NAME) as reader:
        from ros_vilasr.node.bag_writer import ros2_typestore

        store = ros2_typestore()
        for conn, t, raw in reader.messages():
            msg = store.deserialize_cdr(raw, conn.msgtype)
            frames.setdefault(conn.topic, []).append((t, msg))
    records = [json.loads(line) for line in (DATA / TRANSCRIPT_FILE).read_text().splitlines()]
    return frames, json.loads((DATA / SCENE_FILE).read_text()), records


def test_bundled_bag_is_small_and_holds_the_rendered_frames(bundled):
    frames, scene_json, _ = bundled
    size = sum(p.stat().st_size for p in (DATA / BAG_NAME).iterdir())
    assert size < 5 * 2**20  # colour, 16UC1 depth (~30 kB a frame compressed) and camera_info
    assert sc.Scene.from_dict(scene_json["scene"]) == layout.demo_scene()
    assert set(frames) == {*layout.TOPICS.values(), *layout.DEPTH_TOPICS.values(), *layout.INFO_TOPICS.values()}
    for frame_id, topic in layout.TOPICS.items():
        msgs = frames[topic]
        assert len(msgs) == layout.N_FRAMES
        assert [t for t, _ in msgs] == [layout.stamp_ns(i) for i in range(layout.N_FRAMES)]
        for i in (0, layout.REFERENCE_FRAME, layout.N_FRAMES - 1):  # the robot before, during, after
            _, msg = msgs[i]
            assert msg.header.frame_id == frame_id and msg.encoding == "rgb8"
            assert (msg.width, msg.height) == (layout.WIDTH, layout.HEIGHT)
            expected, _ = sc.render(layout.demo_scene(i), layout.camera(frame_id, i))
            assert bytes(msg.data) == expected.tobytes()


def test_bundled_depth_camera_info_and_poses_are_the_renderers(bundled):
    """Every colour frame has its aligned depth (the renderer's, to the millimetre) and camera_info
    (the renderer's intrinsics); scene.json holds the exact poses, and the robot crosses the table
    once per loop."""
    frames, scene_json, _ = bundled
    for topic in (*layout.DEPTH_TOPICS.values(), *layout.INFO_TOPICS.values()):
        assert [t for t, _ in frames[topic]] == [layout.stamp_ns(i) for i in range(layout.N_FRAMES)]
    frame = 17
    camera = layout.camera("cam_right", frame)
    truth = sc.render_layers(layout.demo_scene(frame), camera).depth
    _, depth = frames[layout.DEPTH_TOPICS["cam_right"]][frame]
    assert (depth.encoding, depth.header.frame_id) == ("16UC1", "cam_right")
    mm = np.frombuffer(depth.data.tobytes(), "<u2").reshape(depth.height, depth.width)
    seen = np.isfinite(truth)
    assert np.all(mm[~seen] == 0) and np.abs(mm[seen] / 1000 - truth[seen]).max() <= 0.0005
    _, info = frames[layout.INFO_TOPICS["cam_right"]][frame]
    assert list(info.k) == [camera.focal, 0, camera.width / 2, 0, camera.focal, camera.height / 2, 0, 0, 1]
    pose = scene_json["camera_poses"]["cam_right"][frame]
    assert (pose["position"], pose["yaw"], pose["pitch"]) == (list(camera.position), camera.yaw, camera.pitch)
    truths = [layout.watch_truth(i) for i in range(layout.N_FRAMES)]
    assert scene_json["watch"]["answer_per_frame"] == truths
    assert truths[0] == "A" and truths[-1] == "B" and sum(a != b for a, b in zip(truths, truths[1:])) == 1


def test_transcript_drawings_are_the_ground_truth(bundled):
    """Every object's final box in each trace is its true visible box on the trace's key frame
    (mapped to the model grid), and a still object's stays close to it on every frame the looping
    recording can show."""
    _, scene_json, records = bundled
    grid = resized_size(layout.WIDTH, layout.HEIGHT, MAX_PIXELS_EVAL)
    truth = {cam: [sc.render(layout.demo_scene(i), layout.camera(cam, i))[1] for i in range(layout.N_FRAMES)]
             for cam in layout.TOPICS}
    checked = 0
    for record in records:
        cameras = record["cameras"]
        assert record["model_grid"] == [list(grid)] * len(cameras)
        final: dict[tuple[str, int], tuple] = {}
        turns = [m["content"] for m in record["conversations"] if m["role"] == "assistant"]
        for turn in turns:
            for op in protocol.parse_turn(turn).ops:
                if op.kind == "box" and op.index <= len(cameras):  # drawn on an input image
                    final[(op.label, op.index)] = op.bbox
        for (label, index), box in final.items():
            cam = cameras[index - 1]
            frame = record["key_frame"]["index"]
            key = tr.model_box(truth[cam][frame][label], (layout.WIDTH, layout.HEIGHT), grid)
            assert list(box) == key, (record["question"], label)
            checked += 1
            if label == "robot":
                continue  # it moves: the watch is traced on every frame instead
            source = [box[0] * layout.WIDTH / grid[0], box[1] * layout.HEIGHT / grid[1],
                      box[2] * layout.WIDTH / grid[0], box[3] * layout.HEIGHT / grid[1]]
            worst = min(iou(source, frame[label]) for frame in truth[cam])
            assert worst >= 0.6, (label, cam, worst)
    assert checked >= 10


def test_transcripts_answer_correctly_with_a_reflection_and_a_path(bundled):
    _, scene_json, records = bundled
    questions = {q["question"]: q for q in scene_json["questions"]}
    watch = [r for r in records if r["question"] == layout.WATCH.question]
    records = [r for r in records if r["question"] != layout.WATCH.question]
    assert [r["question"] for r in records] == [q.question for q in layout.demo_questions()]
    # the standing question: one trace per frame, each answering what that frame shows
    assert [r["key_frame"]["index"] for r in watch] == list(range(layout.N_FRAMES))
    for r in watch:
        turns = [m["content"] for m in r["conversations"] if m["role"] == "assistant"]
        assert protocol.format_ok(turns) and len(r["thumbnail"]) == 16 * 12
        assert protocol.extract_answer(turns[-1]) == r["answer"] == layout.watch_truth(r["key_frame"]["index"])
    reflective = path_tracer = 0
    for record in records:
        q = questions[record["question"]]
        turns = [m["content"] for m in record["conversations"] if m["role"] == "assistant"]
        assert protocol.format_ok(turns)
        assert protocol.extract_answer(turns[-1]) == record["answer"] == q["answer"]
        parsed = [protocol.parse_turn(t) for t in turns]
        reflective += protocol.is_reflective([p.ops for p in parsed])
        path_tracer += any(p.action == protocol.PATH_TRACER for p in parsed)
    assert reflective >= 1 and path_tracer >= 1
    truth = {q.question: q.answer for q in layout.demo_questions()}
    assert all(truth[r["question"]] == r["answer"] for r in records)


def test_record_reproduces_the_bundled_files(tmp_path):
    """The bundled data is generated by code: regenerating it gives the same bytes."""
    from ros_vilasr.demo.record import record

    record(tmp_path, progress=False)
    for name in (SCENE_FILE, TRANSCRIPT_FILE):
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), name
    for path in (DATA / BAG_NAME).iterdir():
        assert (tmp_path / BAG_NAME / path.name).read_bytes() == path.read_bytes(), path.name
