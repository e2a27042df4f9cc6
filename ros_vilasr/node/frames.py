"""Lifted drawings in the robot's own frame: the ``target_frame`` parameter (e.g. ``base_link``,
``map``), through tf2, where ``tf2_ros`` is importable (a ROS installation).

The pip-only install has no tf2 wheels: there, and when ``target_frame`` is empty or a transform
is missing at a frame's stamp, drawings stay in the camera's optical frame — ``DrawOp.frame_id``
always names the frame their coordinates are in, and the node logs why once per camera.
"""

from __future__ import annotations

import numpy as np
from geometry_msgs.msg import Point, Vector3

try:
    import tf2_ros
except ImportError:  # the pip-only install
    tf2_ros = None


def rotation(q) -> np.ndarray:
    """3x3 rotation matrix of a unit quaternion (x, y, z, w)."""
    x, y, z, w = q.x, q.y, q.z, q.w
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


class TargetFrame:
    """Camera → ``target`` transforms for lifted drawings, from a tf2 buffer (the node's listener,
    or ``buffer`` given). Transforms are kept per (camera frame, stamp): a dialogue's feedback and
    its final answer put a frame's drawings in the same place."""

    def __init__(self, node, target: str, buffer=None):
        self.node, self.target = node, target
        self.buffer, self._listener = buffer, None
        self.unavailable = ""  # why drawings stay in camera frames, when they all do
        if target and buffer is None:
            if tf2_ros is None:
                self.unavailable = "tf2_ros is not installed (pip-only install)"
                node.get_logger().warning(f"target_frame {target!r}: {self.unavailable}; lifted drawings stay "
                                          "in the cameras' optical frames")
            else:
                self.buffer = tf2_ros.Buffer()
                self._listener = tf2_ros.TransformListener(self.buffer, node)
        self._cache: dict[tuple[str, int, int], tuple[np.ndarray, np.ndarray] | None] = {}
        self._warned: set[str] = set()

    def close(self) -> None:
        """Stop listening to /tf (at deactivation)."""
        if self._listener is not None:
            self._listener.unregister()
            self._listener = None

    def lookup(self, source: str, stamp) -> tuple[np.ndarray, np.ndarray] | None:
        """(rotation, translation) from ``source`` to the target frame at ``stamp``, or None."""
        if not self.target or self.buffer is None or source == self.target:
            return None
        key = (source, stamp.sec, stamp.nanosec)
        if key not in self._cache:
            try:
                t = self.buffer.lookup_transform(self.target, source, stamp).transform
                self._cache[key] = rotation(t.rotation), np.array([t.translation.x, t.translation.y,
                                                                   t.translation.z])
            except Exception as exc:  # noqa: BLE001 - tf2 raises several lookup errors; all mean "not now"
                self._cache[key] = None
                if source not in self._warned:
                    self._warned.add(source)
                    self.node.get_logger().warning(f"no transform {source} -> {self.target} ({exc}); its "
                                                   "drawings stay in the camera frame")
            while len(self._cache) > 256:  # frames of finished dialogues
                self._cache.pop(next(iter(self._cache)))
        return self._cache[key]

    def apply(self, fields: dict, stamp) -> dict:
        """``depth.lift_fields``' output moved into the target frame where a transform exists."""
        if not fields.get("lifted") or (found := self.lookup(fields["frame_id"], stamp)) is None:
            return fields
        r, t = found

        def moved(p: Point) -> Point:
            x, y, z = r @ np.array([p.x, p.y, p.z]) + t
            return Point(x=float(x), y=float(y), z=float(z))

        out = dict(fields, frame_id=self.target)
        for name in ("position", "start", "end"):
            if name in fields:
                out[name] = moved(fields[name])
        if "extent" in fields:  # the box's axis-aligned extent in the new axes
            e = fields["extent"]
            x, y, z = np.abs(r) @ np.array([e.x, e.y, e.z])
            out["extent"] = Vector3(x=float(x), y=float(y), z=float(z))
        return out
