"""3-D lift of drawings (``core.lift``) against the synthetic renderer's exact geometry: rooms of
the demo's rig, their per-pixel depth, and ray casts into the scene's boxes for ground truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ros_vilasr.core.lift import Intrinsics, depth_in_metres, lift_box, lift_line, lift_point
from ros_vilasr.synth import rig_tasks as rt
from ros_vilasr.synth import scene as sc


def rendered(seed: int):
    rng = np.random.default_rng(seed)
    room, cameras = rt.rig_cameras(rng)
    scene = rt.random_rig_scene(rng, room)
    camera = cameras[0]
    return scene, camera, sc.render_layers(scene, camera)


def intrinsics(camera: sc.Camera) -> Intrinsics:
    f = camera.focal
    return Intrinsics.from_k([f, 0, camera.width / 2, 0, f, camera.height / 2, 0, 0, 1], camera.width, camera.height)


def ray(camera: sc.Camera, u: float, v: float) -> np.ndarray:
    """World direction of the ray through pixel (u, v) (unit depth along the optical axis)."""
    d = np.array([(u - camera.width / 2) / camera.focal, (v - camera.height / 2) / camera.focal, 1.0])
    return camera.rotation.T @ d


def hit(camera: sc.Camera, obj: sc.SceneObject, u: float, v: float) -> float | None:
    """Optical-axis depth where the ray through (u, v) enters ``obj``'s box (slab method), or None."""
    origin, direction = np.asarray(camera.position, float), ray(camera, u, v)
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (obj.min_corner - origin) / direction, (obj.max_corner - origin) / direction
    near, far = np.nanmax(np.minimum(t1, t2)), np.nanmin(np.maximum(t1, t2))
    return float(near) if near <= far and near > 0 else None


def close(a, b, distance: float) -> bool:
    return math.dist(a, b) <= max(0.05, 0.03 * distance)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_boxes_lift_to_the_surface_the_camera_sees(seed):
    scene, camera, r = rendered(seed)
    depth, k = depth_in_metres(r.depth, "32FC1"), intrinsics(camera)
    checked = 0
    for obj in scene.objects:
        box = r.boxes[obj.name]
        if box is None or min(box[2] - box[0], box[3] - box[1]) < 12:
            continue
        u, v = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        z = hit(camera, obj, u, v)
        if z is None or r.object_ids[int(v), int(u)] != scene.objects.index(obj):
            continue  # the box centre shows something else (occluded there): no single truth to compare
        lifted = lift_box(depth, k, box)
        assert lifted.valid, lifted.reason
        truth = k.ray(u, v, z)
        assert close(lifted.position, truth, z), (obj.name, lifted.position, truth)
        width = (box[2] - box[0]) * z / k.fx
        assert lifted.extent[0] == pytest.approx(width, rel=0.05)
        checked += 1
    assert checked >= 2


def test_holes_boxes_off_the_image_and_depth_in_millimetres():
    scene, camera, r = rendered(4)
    k = intrinsics(camera)
    metres = depth_in_metres(r.depth, "32FC1")
    box = max((b for b in r.boxes.values() if b), key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
    clean = lift_box(metres, k, box)
    holes = metres.copy()
    holes[np.random.default_rng(0).random(holes.shape) < 0.4] = np.nan  # 40 % of the readings missing
    assert close(lift_box(holes, k, box).position, clean.position, clean.position[2])
    millimetres = np.nan_to_num(r.depth * 1000, posinf=0).astype(np.uint16)  # 0 = no reading
    assert close(lift_box(depth_in_metres(millimetres, "16UC1"), k, box).position, clean.position, 1.0)
    off = (box[0] - 5000, box[1], box[2], box[3])  # reaching far off the left edge: the visible part counts
    assert lift_box(metres, k, off).valid
    assert lift_box(metres, k, (-50, -50, -10, -10)).reason == "the box is outside the depth image"
    empty = np.full_like(metres, np.nan)
    assert "valid depth" in lift_box(empty, k, box).reason and not lift_point(empty, k, (10, 10)).valid


def test_lines_on_the_floor_have_their_metric_length():
    scene, camera, r = rendered(5)
    k, depth = intrinsics(camera), depth_in_metres(r.depth, "32FC1")
    floor = np.argwhere((r.object_ids == -1) & np.isfinite(r.depth))
    origin = np.asarray(camera.position, float)
    points = []
    for v, u in floor[np.random.default_rng(1).choice(len(floor), 200, replace=False)]:
        direction = ray(camera, u, v)
        if direction[2] < -0.05:  # looking down: the floor plane z = 0 in front
            world = origin + (-origin[2] / direction[2]) * direction
            if 0.2 < world[0] < scene.room.size[0] - 0.2 and 0.2 < world[1] < scene.room.size[1] - 0.2:
                points.append(((float(u), float(v)), world))
    assert len(points) >= 20
    for (p, wp), (q, wq) in zip(points[::2], points[1::2]):
        a, b, length = lift_line(depth, k, p, q)
        truth = float(np.linalg.norm(wp - wq))
        assert a.valid and b.valid and length == pytest.approx(truth, abs=max(0.05, 0.03 * truth))


def test_bad_calibration_and_mismatched_depth_are_refused():
    with pytest.raises(ValueError, match="focal length"):
        Intrinsics.from_k([0, 0, 320, 0, 0, 240, 0, 0, 1], 640, 480)
    with pytest.raises(ValueError, match="unsupported depth encoding"):
        depth_in_metres(np.zeros((4, 4)), "rgb8")
    k = Intrinsics.from_k([500, 0, 320, 0, 500, 240, 0, 0, 1], 640, 480)
    with pytest.raises(ValueError, match="depth image is 320x240"):
        lift_box(np.ones((240, 320), np.float32), k, (0, 0, 10, 10))
