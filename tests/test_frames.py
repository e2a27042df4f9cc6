"""Lifted drawings moved into ``target_frame`` (``node/frames.py``).

tf2_ros has no PyPI wheel, so no real tf2 buffer can run here: these tests give ``TargetFrame`` a
stand-in buffer that answers ``lookup_transform`` with real geometry_msgs transforms (or raises,
as tf2 does when a transform is missing). On a ROS installation the node's own listener fills it.
"""

from __future__ import annotations

import math

import pytest

pytest.importorskip("geometry_msgs")

from builtin_interfaces.msg import Time  # noqa: E402
from geometry_msgs.msg import Point, Quaternion, TransformStamped, Vector3  # noqa: E402

from ros_vilasr.node import frames  # noqa: E402
from ros_vilasr.node.frames import TargetFrame  # noqa: E402


class Logger:
    def __init__(self):
        self.warnings = []

    def warning(self, text):
        self.warnings.append(text)


class Node:
    def __init__(self):
        self.logger = Logger()

    def get_logger(self):
        return self.logger


class Buffer:
    """base_link <- cam_optical: camera 0.2 m forward, 1.0 m up, turned 90 degrees about z."""

    def __init__(self):
        self.lookups = []

    def lookup_transform(self, target, source, stamp):
        self.lookups.append((target, source, stamp.sec))
        if source != "cam_optical":
            raise LookupError(f'"{source}" passed to lookupTransform argument source_frame does not exist')
        t = TransformStamped()
        t.transform.translation = Vector3(x=0.2, y=0.0, z=1.0)
        t.transform.rotation = Quaternion(z=math.sin(math.pi / 4), w=math.cos(math.pi / 4))
        return t


def box_fields(frame_id="cam_optical"):
    return {"lifted": True, "lift_error": "", "frame_id": frame_id, "position": Point(x=1.0, y=0.0, z=2.0),
            "extent": Vector3(x=0.4, y=0.1, z=0.3)}


def test_a_lifted_box_and_line_move_into_the_target_frame():
    node, buffer = Node(), Buffer()
    target = TargetFrame(node, "base_link", buffer=buffer)
    out = target.apply(box_fields(), Time(sec=5))
    p, e = out["position"], out["extent"]
    assert out["frame_id"] == "base_link" and out["lifted"]
    assert (p.x, p.y, p.z) == pytest.approx((0.2, 1.0, 3.0))  # (1, 0, 2) turned to (0, 1, 2), then shifted
    assert (e.x, e.y, e.z) == pytest.approx((0.1, 0.4, 0.3))  # the box's sides swap x and y
    line = {"lifted": True, "lift_error": "", "frame_id": "cam_optical", "position": Point(x=0.5),
            "start": Point(x=0.0), "end": Point(x=1.0), "length_m": 1.0}
    moved = target.apply(line, Time(sec=5))
    assert (moved["start"].x, moved["start"].y, moved["end"].x, moved["end"].y) == pytest.approx((0.2, 0.0, 0.2, 1.0))
    assert moved["length_m"] == 1.0
    assert buffer.lookups == [("base_link", "cam_optical", 5)]  # one lookup per frame: feedback and answer agree
    assert node.logger.warnings == []


def test_without_a_transform_drawings_stay_in_the_camera_frame_and_it_is_logged_once():
    node = Node()
    target = TargetFrame(node, "base_link", buffer=Buffer())
    for sec in (1, 2):
        out = target.apply(box_fields("other_optical"), Time(sec=sec))
        assert out["frame_id"] == "other_optical" and out["position"].x == 1.0
    assert len(node.logger.warnings) == 1 and "other_optical -> base_link" in node.logger.warnings[0]
    unlifted = {"lifted": False, "lift_error": "no depth image paired with this camera frame"}
    assert target.apply(unlifted, Time(sec=1)) == unlifted
    assert TargetFrame(node, "", buffer=Buffer()).apply(box_fields(), Time(sec=1))["frame_id"] == "cam_optical"


def test_the_pip_only_install_says_why_drawings_stay_in_camera_frames(monkeypatch):
    monkeypatch.setattr(frames, "tf2_ros", None)
    node = Node()
    target = TargetFrame(node, "base_link")
    assert target.unavailable == "tf2_ros is not installed (pip-only install)"
    assert "stay in the cameras' optical frames" in node.logger.warnings[0]
    assert target.apply(box_fields(), Time(sec=1))["frame_id"] == "cam_optical"
