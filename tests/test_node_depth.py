"""Drawings lifted to 3-D in the node (real DDS): a synthetic room rendered with its exact depth and
intrinsics, colour / depth / camera_info published as a camera driver does, a model (the project's
fake OpenAI-compatible server, a test double) that boxes two objects and joins them with a line.
The lifted positions and the line's length must match the renderer's geometry; bad depth and
camera_info are counted and dropped while the 2-D answer still arrives."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import struct
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("ros_vilasr_interfaces")

from action_msgs.msg import GoalStatus  # noqa: E402
from fake_chat_server import FakeChatServer  # noqa: E402
from node_harness import Client, NodeProcess, answer_turn, draw_turn, header, image_msg, wait_for  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from test_lift import hit  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from ros_vilasr.core.images import resized_size  # noqa: E402
from ros_vilasr.node.conversions import FrameError  # noqa: E402
from ros_vilasr.node.depth import CameraDepth, decode_depth, info_topic  # noqa: E402
from ros_vilasr.synth import rig_tasks as rt  # noqa: E402
from ros_vilasr.synth import scene as sc  # noqa: E402

GOOD, BAD = "/depth/good/color/image_raw", "/depth/bad/color/image_raw"
DEPTH = {GOOD: "/depth/good/aligned_depth/image_raw", BAD: "/depth/bad/aligned_depth/image_raw"}
INFO = {cam: topic.rsplit("/", 1)[0] + "/camera_info" for cam, topic in DEPTH.items()}
MAX_PIXELS = 351232


def room(seed: int = 2):
    rng = np.random.default_rng(seed)
    space, cameras = rt.rig_cameras(rng)
    scene = rt.random_rig_scene(rng, space)
    camera = dataclasses.replace(cameras[0], width=320, height=240)  # small frames: DDS's default transports
    rendering = sc.render_layers(scene, camera)
    # two objects whose box centres show themselves (a single truth to compare with)
    picked = []
    for obj in scene.objects:
        box = rendering.boxes[obj.name]
        if box is None or min(box[2] - box[0], box[3] - box[1]) < 16:
            continue
        u, v = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        if rendering.object_ids[int(v), int(u)] == scene.objects.index(obj) and hit(camera, obj, u, v):
            picked.append(obj)
    assert len(picked) >= 2, "the seed's room must show two objects"
    return scene, camera, rendering, picked[:2]


def camera_info(camera: sc.Camera, hdr, focal: float | None = None) -> CameraInfo:
    f = camera.focal if focal is None else focal
    return CameraInfo(header=hdr, width=camera.width, height=camera.height,
                      k=[f, 0.0, camera.width / 2, 0.0, f, camera.height / 2, 0.0, 0.0, 1.0])


def depth_msg(metres: np.ndarray, hdr) -> Image:
    """16UC1 millimetres, 0 where nothing was rendered (as a depth camera reports no reading)."""
    data = np.where(np.isfinite(metres), np.round(metres * 1000), 0).astype(np.uint16)
    return Image(header=hdr, height=data.shape[0], width=data.shape[1], encoding="16UC1", is_bigendian=0,
                 step=data.shape[1] * 2, data=data.tobytes())


class Model:
    """Draws a box around each picked object and a line between their centres (model-grid
    coordinates), then answers."""

    def __init__(self, boxes, scale):
        self.boxes, self.scale = boxes, scale

    def __call__(self, body: dict):
        if any(m["role"] == "assistant" for m in body["messages"]):
            return answer_turn("A"), "stop", 5
        sx, sy = self.scale
        grid = [[b[0] / sx, b[1] / sy, b[2] / sx, b[3] / sy] for b in self.boxes]
        items = [{"index": 1, "bbox_2d": [round(c, 1) for c in g], "label": f"object {i}"} for i, g in enumerate(grid)]
        centres = [[(g[0] + g[2]) / 2, (g[1] + g[3]) / 2] for g in grid]
        if "How far apart" in json.dumps(body["messages"]):
            return draw_turn("Path Tracer", [{"index": 1, "start_point_2d": centres[0], "end_point_2d": centres[1],
                                              "label": "gap"}]), "stop", 9
        return draw_turn("Object Mapper", items), "stop", 9


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    scene, camera, rendering, objects = room()
    boxes = [rendering.boxes[o.name] for o in objects]
    grid = resized_size(camera.width, camera.height, MAX_PIXELS)
    model = Model(boxes, (camera.width / grid[0], camera.height / grid[1]))
    server = FakeChatServer(model)
    proc = NodeProcess(tmp_path_factory.mktemp("depth") / "node.log", engine="openai", model="served",
                       openai_base_url=server.base_url, image_topics=[GOOD, BAD],
                       depth_topics=[DEPTH[GOOD], DEPTH[BAD]], keyframe_min_interval_s=0.0,
                       max_pixels=MAX_PIXELS, diagnostics_period_s=0.2)
    client = Client("depth_client")
    markers: list[MarkerArray] = []
    client.node.create_subscription(MarkerArray, "/vilasr_node/markers_3d", markers.append, 10)
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    info_pubs = {cam: client.node.create_publisher(CameraInfo, INFO[cam], qos) for cam in (GOOD, BAD)}
    depth_pubs = {cam: client.node.create_publisher(Image, DEPTH[cam], qos) for cam in (GOOD, BAD)}
    try:
        client.wait_active(60.0)
        for pub in (*info_pubs.values(), *depth_pubs.values()):
            wait_for(lambda p=pub: p.get_subscription_count() > 0, what="the node's depth subscriptions")
        yield {"client": client, "camera": camera, "scene": scene, "rendering": rendering, "objects": objects,
               "info": info_pubs, "depth": depth_pubs, "markers": markers}
    finally:
        client.close()
        code = proc.stop()
        server.close()
        assert code == 0, f"node exited with {code}:\n{proc.log()[-3000:]}"


def counted(client, camera: str, publisher, msg, key: str, above: int = 0) -> None:
    """Publish until the node's diagnostics of ``camera`` count ``key`` above ``above`` (the node
    takes its subscriptions' messages in any order, and its camera subscriptions are best effort)."""
    def check():
        publisher.publish(msg)
        return int((client.camera_values(camera) or {}).get(key, 0)) > above
    wait_for(check, interval=0.3, what=f"{key} counted")


def publish_good(s, sec: int, depth_first: bool) -> None:
    """One synchronized colour / depth / camera_info triple (stamps differ by 10 ms)."""
    camera, r, client = s["camera"], s["rendering"], s["client"]
    colour = image_msg(np.asarray(r.image), header(sec, "good_color_optical"))
    depth = depth_msg(r.depth, header(sec, "good_color_optical", nanosec=10_000_000))
    s["info"][GOOD].publish(camera_info(camera, header(sec, "good_color_optical")))
    time.sleep(0.2)  # the node takes its subscriptions' messages in any order: intrinsics first
    before = int((client.camera_values(GOOD) or {}).get("received", 0))
    if depth_first:
        s["depth"][GOOD].publish(depth)
    counted(client, GOOD, client.publisher(GOOD), colour, "received", above=before)
    if not depth_first:
        s["depth"][GOOD].publish(depth)


def truth(s, box) -> np.ndarray:
    camera, obj = s["camera"], next(o for o in s["objects"] if s["rendering"].boxes[o.name] == box)
    u, v = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    z = hit(camera, obj, u, v)
    return np.array([(u - camera.width / 2) * z / camera.focal, (v - camera.height / 2) * z / camera.focal, z])


def close(a, b) -> bool:
    distance = float(np.linalg.norm(b))
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b))) <= max(0.05, 0.03 * distance)


@pytest.mark.parametrize("depth_first", [True, False])
def test_boxes_and_lines_are_lifted_to_the_rooms_geometry(setup, depth_first):
    s, client = setup, setup["client"]
    for attempt in range(3):  # depth topics are best effort: a lost depth image is sent again
        publish_good(s, 10 * attempt + depth_first, depth_first)
        time.sleep(0.5)  # a depth image sent after its colour frame arrives and is paired with it
        status, answer, _ = client.query("Where are the objects? Draw boxes.", cameras=[GOOD])
        if all(op.lifted for op in answer.steps[0].ops):
            break
    assert status == GoalStatus.STATUS_SUCCEEDED and answer.answer == "A"
    boxes = [op for op in answer.steps[0].ops]
    assert [op.lifted for op in boxes] == [True, True], [op.lift_error for op in boxes]
    for op, obj in zip(boxes, s["objects"]):
        p = (op.position.x, op.position.y, op.position.z)
        assert close(p, truth(s, s["rendering"].boxes[obj.name])), (p, truth(s, s["rendering"].boxes[obj.name]))
        assert op.frame_id == "good_color_optical" and op.extent.x > 0 and op.extent.y > 0
    markers = wait_for(lambda: s["markers"] and s["markers"][-1], what="~/markers_3d")
    kinds = [m.type for m in markers.markers]
    assert markers.markers[0].action == Marker.DELETEALL and kinds[1:].count(Marker.CUBE) == 2
    assert kinds[1:].count(Marker.TEXT_VIEW_FACING) == 2 and markers.markers[1].header.frame_id == "good_color_optical"

    status, answer, _ = client.query("How far apart are they? Draw a line.", cameras=[GOOD])
    (line,) = answer.steps[0].ops
    a, b = (truth(s, s["rendering"].boxes[o.name]) for o in s["objects"])
    assert line.lifted and close((line.start.x, line.start.y, line.start.z), a)
    assert math.isclose(line.length_m, float(np.linalg.norm(a - b)), rel_tol=0.03, abs_tol=0.05)
    strip = wait_for(lambda: [m for m in s["markers"][-1].markers if m.type == Marker.LINE_STRIP], what="a strip")
    assert f"{line.length_m:.2f} m" in next(m.text for m in s["markers"][-1].markers
                                            if m.type == Marker.TEXT_VIEW_FACING) and len(strip[0].points) == 2


def test_bad_depth_and_camera_info_are_counted_and_the_2d_answer_still_arrives(setup):
    s, client, camera = setup, setup["client"], setup["camera"]
    r = s["rendering"]

    counted(client, BAD, s["info"][BAD], camera_info(camera, header(20, "bad"), focal=0.0), "dropped_camera_info")
    s["info"][BAD].publish(camera_info(camera, header(21, "bad")))
    counted(client, BAD, s["depth"][BAD], depth_msg(r.depth[:100, :100], header(21, "bad")), "dropped_depth_size")
    bad = depth_msg(r.depth, header(22, "bad"))
    bad.encoding = "rgb8"
    counted(client, BAD, s["depth"][BAD], bad, "dropped_depth_encoding")
    assert "unsupported depth encoding 'rgb8'" in client.camera_values(BAD)["last_drop_reason"]
    counted(client, BAD, client.publisher(BAD), image_msg(np.asarray(r.image), header(22, "bad")), "received")
    status, answer, _ = client.query("Where are the objects? Draw boxes.", cameras=[BAD])
    assert status == GoalStatus.STATUS_SUCCEEDED and answer.answer == "A"
    assert {(op.lifted, op.lift_error) for op in answer.steps[0].ops} == {
        (False, "no depth image paired with this camera frame")}


# -- the pieces, without DDS -------------------------------------------------------------------------

class Frame:
    depth = None


def test_depth_messages_decode_to_metres():
    mm = np.array([[0, 1500], [65535, 250]], dtype=np.uint16)
    raw = Image(height=2, width=2, encoding="16UC1", is_bigendian=0, step=4, data=mm.tobytes())
    np.testing.assert_allclose(decode_depth(raw, False), [[np.nan, 1.5], [65.535, 0.25]])
    big = Image(height=2, width=2, encoding="16UC1", is_bigendian=1, step=6, data=np.pad(
        mm.astype(">u2"), ((0, 0), (0, 1))).tobytes())  # padded rows, big-endian
    np.testing.assert_allclose(decode_depth(big, False), decode_depth(raw, False))

    from PIL import Image as PILImage
    from sensor_msgs.msg import CompressedImage

    png = io.BytesIO()
    PILImage.fromarray(mm).save(png, format="PNG")
    packed = CompressedImage(format="16UC1; compressedDepth png", data=struct.pack("<iff", 0, 0, 0) + png.getvalue())
    np.testing.assert_allclose(decode_depth(packed, True), decode_depth(raw, False))
    with pytest.raises(FrameError, match="unsupported compressed depth format 'jpeg'"):
        decode_depth(CompressedImage(format="jpeg", data=b"x" * 20), True)
    with pytest.raises(FrameError, match="does not match its 3 bytes"):
        decode_depth(Image(height=2, width=2, encoding="32FC1", step=8, data=b"abc"), False)
    assert info_topic("/cam/aligned/image_raw/compressedDepth") == "/cam/aligned/camera_info"


def test_frames_pair_with_the_nearest_depth_within_tolerance_whichever_comes_first():
    camera = sc.Camera((0.0, 0.0, 1.0), 0.0, width=64, height=48)
    state = CameraDepth(tolerance_s=0.05)
    with pytest.raises(FrameError, match="depth before any camera_info"):
        state.on_depth(0, np.ones((48, 64), np.float32))
    state.on_info(camera_info(camera, header(0, "optical")))
    near, far = np.full((48, 64), 2.0, np.float32), np.full((48, 64), 3.0, np.float32)
    state.on_depth(1_000_000_000, far)
    state.on_depth(1_030_000_000, near)
    early = Frame()
    state.on_colour(early, 1_040_000_000, (64, 48))  # 10 ms from near, 40 ms from far
    assert early.depth.metres is near and early.depth.frame_id == "optical"
    late = Frame()
    state.on_colour(late, 2_000_000_000, (64, 48))  # no depth yet: it waits ...
    assert late.depth is None
    state.on_depth(2_200_000_000, far)  # ... not for one 200 ms away
    assert late.depth is None
    state.on_depth(2_020_000_000, near)
    assert late.depth.metres is near
    with pytest.raises(FrameError, match="its colour frame 32x24: not aligned"):
        state.on_colour(Frame(), 2_020_000_000, (32, 24))
    with pytest.raises(FrameError, match="no usable focal length"):
        state.on_info(camera_info(camera, header(0, "optical"), focal=0.0))
