"""Drawings a robot can act on: boxes and lines lifted to 3-D with an aligned depth image and the
camera's pinhole intrinsics (ROS-free; the node feeds it ``sensor_msgs`` depth and camera_info).

Positions are in the camera's optical frame (x right, y down, z forward, metres), the frame of
``camera_info``. A box becomes the visible surface point at its centre — depth from the median of
the valid depths in the box's central region, so background at its edges and holes in the depth
do not move it — and an extent (width and height from the box and that depth, depth spread from
the central depths' 10th to 90th percentiles). A line becomes its two endpoints (median depth in a
small window around each) and their distance. Anything that cannot be lifted says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEPTH_ENCODINGS = {"16UC1": 0.001, "mono16": 0.001, "32FC1": 1.0}  # raw unit -> metres
CENTRAL = 0.3  # share of the box's width and height whose depths decide its distance
POINT_WINDOW = 2  # pixels either side of a line endpoint
MIN_VALID = 3  # depth pixels needed to trust a distance


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of an image of ``width`` x ``height`` (sensor_msgs/CameraInfo's K)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_k(cls, k, width: int, height: int) -> Intrinsics:
        fx, fy, cx, cy = float(k[0]), float(k[4]), float(k[2]), float(k[5])
        if not all(map(math.isfinite, (fx, fy, cx, cy))) or fx <= 0 or fy <= 0:
            raise ValueError(f"camera_info has no usable focal length (fx={fx}, fy={fy})")
        if width <= 0 or height <= 0:
            raise ValueError(f"camera_info has no image size ({width}x{height})")
        return cls(fx, fy, cx, cy, int(width), int(height))

    def ray(self, u: float, v: float, z: float) -> tuple[float, float, float]:
        """The point at depth ``z`` (metres along the optical axis) seen at pixel (u, v)."""
        return (u - self.cx) * z / self.fx, (v - self.cy) * z / self.fy, z


@dataclass(frozen=True)
class Lifted:
    """A drawing in 3-D, or why it is not (``valid`` False, ``reason`` set, numbers zero)."""

    valid: bool
    position: tuple[float, float, float] = (0.0, 0.0, 0.0)  # optical frame, metres
    extent: tuple[float, float, float] = (0.0, 0.0, 0.0)  # box: width, height, depth spread, metres
    reason: str = ""

    @classmethod
    def invalid(cls, reason: str) -> Lifted:
        return cls(False, reason=reason)


def depth_in_metres(array: np.ndarray, encoding: str) -> np.ndarray:
    """(H, W) float32 metres, NaN where the sensor has no reading (0, negative, non-finite)."""
    scale = DEPTH_ENCODINGS.get(encoding)
    if scale is None:
        raise ValueError(f"unsupported depth encoding {encoding!r} (supported: {', '.join(DEPTH_ENCODINGS)})")
    metres = np.asarray(array, dtype=np.float32) * np.float32(scale)
    metres[~np.isfinite(metres) | (metres <= 0)] = np.nan
    return metres


def _window(depth: np.ndarray, x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
    h, w = depth.shape
    c1, r1 = max(0, math.floor(x1)), max(0, math.floor(y1))
    c2, r2 = min(w, math.ceil(x2)), min(h, math.ceil(y2))
    if c2 <= c1 or r2 <= r1:
        return np.empty(0, np.float32)
    values = depth[r1:r2, c1:c2].ravel()
    return values[np.isfinite(values)]


def _check(depth: np.ndarray, intrinsics: Intrinsics) -> None:
    if depth.shape != (intrinsics.height, intrinsics.width):
        raise ValueError(f"depth image is {depth.shape[1]}x{depth.shape[0]}, camera_info says "
                         f"{intrinsics.width}x{intrinsics.height}")


def lift_box(depth: np.ndarray, intrinsics: Intrinsics, box) -> Lifted:
    """``box``: (x1, y1, x2, y2) in the depth image's pixels (x2, y2 exclusive)."""
    _check(depth, intrinsics)
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2, y1, y2 = min(x1, x2), max(x1, x2), min(y1, y2), max(y1, y2)
    if x2 <= 0 or y2 <= 0 or x1 >= intrinsics.width or y1 >= intrinsics.height:
        return Lifted.invalid("the box is outside the depth image")
    # the central region of the part of the box inside the image
    cx1, cy1 = max(x1, 0.0), max(y1, 0.0)
    cx2, cy2 = min(x2, float(intrinsics.width)), min(y2, float(intrinsics.height))
    mw, mh = (cx2 - cx1) * (1 - CENTRAL) / 2, (cy2 - cy1) * (1 - CENTRAL) / 2
    values = _window(depth, cx1 + mw, cy1 + mh, cx2 - mw, cy2 - mh)
    if values.size < MIN_VALID:
        return Lifted.invalid(f"only {values.size} valid depth pixels in the box's centre")
    z = float(np.median(values))
    near, far = np.percentile(values, [10, 90])
    u, v = (cx1 + cx2) / 2, (cy1 + cy2) / 2
    return Lifted(True, intrinsics.ray(u, v, z),
                  ((cx2 - cx1) * z / intrinsics.fx, (cy2 - cy1) * z / intrinsics.fy, float(far - near)))


def lift_point(depth: np.ndarray, intrinsics: Intrinsics, point) -> Lifted:
    """``point``: (u, v) in the depth image's pixels."""
    _check(depth, intrinsics)
    u, v = (float(c) for c in point)
    if not (0 <= u < intrinsics.width and 0 <= v < intrinsics.height):
        return Lifted.invalid("the point is outside the depth image")
    values = _window(depth, u - POINT_WINDOW, v - POINT_WINDOW, u + POINT_WINDOW + 1, v + POINT_WINDOW + 1)
    if values.size < MIN_VALID:
        return Lifted.invalid("no valid depth around the point")
    return Lifted(True, intrinsics.ray(u, v, float(np.median(values))))


def lift_line(depth: np.ndarray, intrinsics: Intrinsics, start, end) -> tuple[Lifted, Lifted, float | None]:
    """Both endpoints in 3-D and the metric length between them (None unless both lift)."""
    a, b = lift_point(depth, intrinsics, start), lift_point(depth, intrinsics, end)
    length = math.dist(a.position, b.position) if a.valid and b.valid else None
    return a, b, length
