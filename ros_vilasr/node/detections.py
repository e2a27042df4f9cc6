"""The model's drawn boxes as ``vision_msgs`` detections, so trackers and planners consume them
without knowing this package: ``~/detections`` (``Detection2DArray``, source-image pixels) and,
for boxes lifted with depth, ``~/detections_3d`` (``Detection3DArray``, the camera's optical
frame). One array per source frame and step, stamped with that frame's header.

Only where ``vision_msgs`` (4.x: Humble and later) is importable, i.e. a ROS installation; the
pip-only install has no ``vision_msgs`` wheel, and there the node says so once and publishes
the same boxes in ``SpatialAnswer`` / ``~/markers_3d`` only.
"""

from __future__ import annotations

from geometry_msgs.msg import Pose, PoseWithCovariance, Vector3

try:
    import vision_msgs.msg as vision_msgs
except ImportError:  # the pip-only install
    vision_msgs = None


def _by_source(ops) -> dict[tuple, list]:
    groups: dict[tuple, list] = {}
    for op in ops:
        if op.kind == op.BOX:
            key = (op.header.frame_id, op.header.stamp.sec, op.header.stamp.nanosec)
            groups.setdefault(key, []).append(op)
    return groups


def _hypothesis(msgs, op, pose: Pose | None = None):
    # The model states no confidence: a box it drew is its hypothesis, scored 1.
    result = msgs.ObjectHypothesisWithPose()
    result.hypothesis.class_id, result.hypothesis.score = op.label, 1.0
    if pose is not None:
        result.pose = PoseWithCovariance(pose=pose)
    return result


def detections_2d(ops, query: int, step: int, msgs=vision_msgs) -> list:
    """A step's boxes as ``Detection2DArray``s, one per source frame (pixels of that frame)."""
    arrays = []
    for group in _by_source(ops).values():
        array = msgs.Detection2DArray(header=group[0].header)
        for op in group:
            x1, y1, x2, y2 = op.source_coords
            d = msgs.Detection2D(header=op.header, id=f"query{query}/step{step}/{op.label}")
            d.bbox.center.position.x, d.bbox.center.position.y = (x1 + x2) / 2, (y1 + y2) / 2
            d.bbox.size_x, d.bbox.size_y = float(x2 - x1), float(y2 - y1)
            d.results = [_hypothesis(msgs, op)]
            array.detections.append(d)
        arrays.append(array)
    return arrays


def detections_3d(ops, query: int, step: int, msgs=vision_msgs) -> list:
    """A step's lifted boxes as ``Detection3DArray``s in the camera's optical frame."""
    arrays = []
    for group in _by_source([op for op in ops if op.lifted]).values():
        header = type(group[0].header)(stamp=group[0].header.stamp, frame_id=group[0].frame_id)
        array = msgs.Detection3DArray(header=header)
        for op in group:
            pose = Pose(position=op.position)
            pose.orientation.w = 1.0
            d = msgs.Detection3D(header=header, id=f"query{query}/step{step}/{op.label}")
            d.bbox.center = pose
            d.bbox.size = Vector3(x=op.extent.x, y=op.extent.y, z=op.extent.z)
            d.results = [_hypothesis(msgs, op, pose)]
            array.detections.append(d)
        arrays.append(array)
    return arrays


class DetectionPublishers:
    """``~/detections`` and ``~/detections_3d`` where vision_msgs is importable, else nothing."""

    def __init__(self, node):
        self.node, self._2d, self._3d = node, None, None

    def create(self) -> None:
        if vision_msgs is None:
            self.node.get_logger().info("vision_msgs is not installed (pip-only install): drawn boxes are not "
                                        "published as vision_msgs detections")
            return
        self._2d = self.node.create_lifecycle_publisher(vision_msgs.Detection2DArray, "~/detections", 10)
        self._3d = self.node.create_lifecycle_publisher(vision_msgs.Detection3DArray, "~/detections_3d", 10)

    def publish(self, ops, query: int, step: int) -> None:
        if self._2d is None:
            return
        for array in detections_2d(ops, query, step):
            self._2d.publish(array)
        for array in detections_3d(ops, query, step):
            self._3d.publish(array)

    def destroy(self) -> None:
        for publisher in (self._2d, self._3d):
            if publisher is not None:
                self.node.destroy_lifecycle_publisher(publisher)
        self._2d = self._3d = None
