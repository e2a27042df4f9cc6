"""Drawn boxes as vision_msgs detections (``node/detections.py``).

vision_msgs has no PyPI wheel, so it cannot be imported here: these tests build the arrays with a
stand-in of its 4.x message classes (same field names and nesting, plain dataclasses) and real
DrawOp / geometry_msgs messages. On a ROS installation the node publishes the real ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

pytest.importorskip("ros_vilasr_interfaces")

from builtin_interfaces.msg import Time  # noqa: E402
from geometry_msgs.msg import Point, Pose, PoseWithCovariance, Vector3  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from ros_vilasr.node.detections import detections_2d, detections_3d  # noqa: E402
from ros_vilasr_interfaces.msg import DrawOp  # noqa: E402


@dataclass
class Point2D:
    x: float = 0.0
    y: float = 0.0


@dataclass
class Pose2D:
    position: Point2D = field(default_factory=Point2D)
    theta: float = 0.0


@dataclass
class BoundingBox2D:
    center: Pose2D = field(default_factory=Pose2D)
    size_x: float = 0.0
    size_y: float = 0.0


@dataclass
class BoundingBox3D:
    center: Pose = field(default_factory=Pose)
    size: Vector3 = field(default_factory=Vector3)


@dataclass
class ObjectHypothesis:
    class_id: str = ""
    score: float = 0.0


@dataclass
class ObjectHypothesisWithPose:
    hypothesis: ObjectHypothesis = field(default_factory=ObjectHypothesis)
    pose: PoseWithCovariance = field(default_factory=PoseWithCovariance)


@dataclass
class Detection2D:
    header: Header = field(default_factory=Header)
    results: list = field(default_factory=list)
    bbox: BoundingBox2D = field(default_factory=BoundingBox2D)
    id: str = ""


@dataclass
class Detection3D(Detection2D):
    bbox: BoundingBox3D = field(default_factory=BoundingBox3D)


@dataclass
class Detection2DArray:
    header: Header = field(default_factory=Header)
    detections: list = field(default_factory=list)


class Detection3DArray(Detection2DArray):
    pass


VISION_MSGS = SimpleNamespace(**{c.__name__: c for c in (
    ObjectHypothesisWithPose, Detection2D, Detection3D, Detection2DArray, Detection3DArray)})


def op(kind, label, coords, frame="cam_left", sec=7, lifted=False, position=(0.0, 0.0, 0.0), extent=(0.0, 0.0, 0.0)):
    return DrawOp(kind=kind, label=label, source_coords=[float(c) for c in coords],
                  header=Header(stamp=Time(sec=sec), frame_id=frame), lifted=lifted,
                  frame_id=f"{frame}_optical" if lifted else "", position=Point(**dict(zip("xyz", position))),
                  extent=Vector3(**dict(zip("xyz", extent))))


def test_boxes_become_2d_detections_per_source_frame_and_lines_are_left_out():
    ops = [op(DrawOp.BOX, "chair", (10, 20, 50, 100)), op(DrawOp.LINE, "chair to door", (30, 60, 200, 80)),
           op(DrawOp.BOX, "door", (300, 0, 340, 200), frame="cam_right"), op(DrawOp.BOX, "table", (0, 0, 4, 2))]
    arrays = detections_2d(ops, query=3, step=2, msgs=VISION_MSGS)
    assert [(a.header.frame_id, [d.id for d in a.detections]) for a in arrays] == [
        ("cam_left", ["query3/step2/chair", "query3/step2/table"]), ("cam_right", ["query3/step2/door"])]
    chair = arrays[0].detections[0]
    assert (chair.bbox.center.position.x, chair.bbox.center.position.y, chair.bbox.size_x, chair.bbox.size_y) == \
        (30.0, 60.0, 40.0, 80.0)
    assert (chair.results[0].hypothesis.class_id, chair.results[0].hypothesis.score) == ("chair", 1.0)
    assert chair.header.stamp.sec == 7


def test_only_lifted_boxes_become_3d_detections_in_the_optical_frame():
    ops = [op(DrawOp.BOX, "chair", (10, 20, 50, 100), lifted=True, position=(0.5, 0.2, 2.0), extent=(0.4, 0.9, 0.4)),
           op(DrawOp.BOX, "far wall", (0, 0, 10, 10))]  # no depth there: not lifted
    (array,) = detections_3d(ops, query=1, step=1, msgs=VISION_MSGS)
    assert array.header.frame_id == "cam_left_optical" and [d.id for d in array.detections] == ["query1/step1/chair"]
    chair = array.detections[0]
    p, size = chair.bbox.center.position, chair.bbox.size
    assert (p.x, p.y, p.z, size.x, size.y, size.z) == (0.5, 0.2, 2.0, 0.4, 0.9, 0.4)
    assert chair.bbox.center.orientation.w == 1.0
    assert chair.results[0].pose.pose.position.z == 2.0
    assert detections_3d([ops[1]], query=1, step=1, msgs=VISION_MSGS) == []
