"""Aligned depth and camera_info per camera: decoded, paired with the colour frames by time stamp,
and the 3-D lift of a query's drawings (``core.lift``) as DrawOp fields and ``~/markers_3d``.

A camera with a depth topic (``depth_topics``, aligned with ``image_topics``) also listens to its
camera_info (``camera_info_topics``, or the depth topic's sibling ``camera_info``). Each colour
frame is paired with the depth image whose stamp is nearest within ``depth_tolerance_s``, whichever
arrives first; the key frame keeps the depth and intrinsics it was taken with. Bad depth (unknown
encoding, another size than its camera_info or its colour frame) and bad camera_info (no focal
length) are counted per camera in /diagnostics and dropped; the 2-D answer is never held up.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections import deque
from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point, Vector3
from PIL import Image as PILImage
from std_msgs.msg import Header
from visualization_msgs.msg import Marker, MarkerArray

from ros_vilasr.core.lift import DEPTH_ENCODINGS, Intrinsics, Lifted, depth_in_metres, lift_box, lift_line
from ros_vilasr.core.render import PALETTE

from .conversions import FrameError, rgba

RECENT_DEPTH = 8  # depth images kept per camera for frames that arrive after them (~0.25 s at 30 Hz)
MARKER_LIFETIME_S = 60.0  # 3-D markers of an answer fade unless the next answer replaces them


@dataclass(frozen=True)
class DepthView:
    """What a colour frame was taken with: depth in metres (NaN = no reading) and intrinsics."""

    metres: np.ndarray
    intrinsics: Intrinsics
    frame_id: str  # camera_info's optical frame

    @property
    def nbytes(self) -> int:
        return self.metres.nbytes


def info_topic(depth_topic: str) -> str:
    """The camera_info next to a depth topic: /cam/depth/image_raw[/compressedDepth] -> /cam/depth/camera_info."""
    base = depth_topic.rstrip("/").removesuffix("/compressedDepth")
    return base.rsplit("/", 1)[0] + "/camera_info"


def stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def decode_depth(msg, compressed: bool) -> np.ndarray:
    """(H, W) float32 metres of a sensor_msgs/Image (16UC1 / mono16 mm, 32FC1 m) or a
    compressedDepth CompressedImage (image_transport's: a 12-byte header, then PNG)."""
    if compressed:
        return _decode_compressed_depth(msg.format, bytes(msg.data))
    dtype = {"16UC1": np.uint16, "mono16": np.uint16, "32FC1": np.float32}.get(msg.encoding)
    if dtype is None:
        raise FrameError("depth_encoding", f"unsupported depth encoding {msg.encoding!r} "
                         f"(supported: {', '.join(DEPTH_ENCODINGS)})")
    item = np.dtype(dtype).itemsize
    if msg.width <= 0 or msg.height <= 0 or msg.step < msg.width * item or len(msg.data) != msg.step * msg.height:
        raise FrameError("depth_size", f"depth image {msg.width}x{msg.height} (step {msg.step}) does not match "
                         f"its {len(msg.data)} bytes")
    order = ">" if msg.is_bigendian else "<"
    rows = np.frombuffer(bytes(msg.data), dtype=np.dtype(dtype).newbyteorder(order)).reshape(msg.height, -1)
    return depth_in_metres(rows[:, :msg.width], msg.encoding)


def _decode_compressed_depth(fmt: str, data: bytes) -> np.ndarray:
    encoding = fmt.split(";")[0].strip()
    if "compressedDepth" not in fmt or encoding not in ("16UC1", "32FC1") or len(data) < 12:
        raise FrameError("depth_encoding", f"unsupported compressed depth format {fmt!r} "
                         "(supported: 16UC1 / 32FC1; compressedDepth png)")
    _, quant_a, quant_b = struct.unpack("<iff", data[:12])
    try:
        png = PILImage.open(io.BytesIO(data[12:]))
        values = np.asarray(png, dtype=np.float32 if encoding == "32FC1" else np.uint16)
    except (OSError, ValueError, zlib.error) as exc:
        raise FrameError("depth_encoding", f"undecodable compressed depth ({type(exc).__name__}: {exc})") from exc
    if encoding == "16UC1":
        return depth_in_metres(values, "16UC1")
    with np.errstate(divide="ignore"):  # image_transport's inverse-depth quantisation; 0 = no reading
        metres = np.where(values > 0, quant_a / (values - quant_b), np.nan).astype(np.float32)
    return depth_in_metres(metres, "32FC1")


class CameraDepth:
    """One colour camera's depth and intrinsics, and the pairing of its frames with them."""

    def __init__(self, tolerance_s: float):
        self.tolerance_ns = int(tolerance_s * 1e9)
        self.intrinsics: Intrinsics | None = None
        self.frame_id = ""
        self.recent: deque[tuple[int, np.ndarray]] = deque(maxlen=RECENT_DEPTH)
        self.waiting: deque[tuple[int, tuple[int, int], object]] = deque(maxlen=RECENT_DEPTH)

    def on_info(self, msg) -> None:
        try:
            self.intrinsics = Intrinsics.from_k(msg.k, msg.width, msg.height)
        except ValueError as exc:
            raise FrameError("camera_info", str(exc)) from exc
        self.frame_id = msg.header.frame_id

    def on_depth(self, stamp: int, metres: np.ndarray) -> None:
        """Keep a depth image, and give it to the colour frames waiting for it."""
        if self.intrinsics is None:
            raise FrameError("no_camera_info", "depth before any camera_info: intrinsics unknown")
        k = self.intrinsics
        if metres.shape != (k.height, k.width):
            raise FrameError("depth_size", f"depth image is {metres.shape[1]}x{metres.shape[0]}, camera_info "
                             f"says {k.width}x{k.height}")
        self.recent.append((stamp, metres))
        for item in [w for w in self.waiting if abs(w[0] - stamp) <= self.tolerance_ns]:
            self.waiting.remove(item)
            self._attach(item[2], item[1], metres)

    def on_colour(self, frame, stamp: int, size: tuple[int, int]) -> None:
        """Pair a colour frame ((width, height) ``size``) with the nearest depth within tolerance,
        or keep it waiting for one."""
        near = [(abs(s - stamp), d) for s, d in self.recent if abs(s - stamp) <= self.tolerance_ns]
        if near:
            self._attach(frame, size, min(near, key=lambda x: x[0])[1])
        else:
            self.waiting.append((stamp, size, frame))

    def _attach(self, frame, size: tuple[int, int], metres: np.ndarray) -> None:
        if metres.shape != (size[1], size[0]):
            raise FrameError("depth_size", f"depth image is {metres.shape[1]}x{metres.shape[0]}, its colour "
                             f"frame {size[0]}x{size[1]}: not aligned")
        frame.depth = DepthView(metres, self.intrinsics, self.frame_id)


class DepthInputs:
    """The depth and camera_info subscriptions of every camera that has a depth topic."""

    def __init__(self):
        self.cameras: dict[str, CameraDepth] = {}
        self._subscriptions = []

    def subscribe(self, node, image_topics, depth_topics, info_topics, tolerance_s: float, qos, group, drop) -> None:
        """``drop(camera, kind, reason)`` counts a bad message against its colour camera."""
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        for i, camera in enumerate(image_topics):
            depth = depth_topics[i] if i < len(depth_topics) else ""
            if not depth:
                continue
            info = (info_topics[i] if i < len(info_topics) else "") or info_topic(depth)
            state = self.cameras[camera] = CameraDepth(tolerance_s)
            compressed = depth.rstrip("/").endswith("/compressedDepth")
            self._subscriptions += [
                node.create_subscription(CompressedImage if compressed else Image, depth,
                                         _guarded(lambda m, s=state, c=compressed: s.on_depth(
                                             stamp_ns(m.header), decode_depth(m, c)), camera, drop),
                                         qos, callback_group=group),
                node.create_subscription(CameraInfo, info, _guarded(state.on_info, camera, drop), qos,
                                         callback_group=group)]
            node.get_logger().info(f"{camera}: depth {depth}, camera_info {info}")

    def on_colour(self, camera: str, frame, header, size: tuple[int, int], drop) -> None:
        """Pair ``camera``'s new colour frame (a camera with a depth topic: see ``__contains__``)."""
        _guarded(self.cameras[camera].on_colour, camera, drop)(frame, stamp_ns(header), size)

    def __contains__(self, camera: str) -> bool:
        return camera in self.cameras

    def destroy(self, node) -> None:
        for subscription in self._subscriptions:
            node.destroy_subscription(subscription)
        self._subscriptions, self.cameras = [], {}


def _guarded(handle, camera: str, drop):
    """A callback that counts a bad message (FrameError) against ``camera`` instead of raising."""
    def callback(*args):
        try:
            handle(*args)
        except FrameError as exc:
            drop(camera, exc.kind, exc.reason)
        except Exception as exc:  # noqa: BLE001 - no depth message may take the node down
            drop(camera, "depth_error", f"{type(exc).__name__}: {exc}")
    return callback


# -- the lift of a query's drawings -----------------------------------------------------------------

def point(xyz) -> Point:
    return Point(x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2]))


def lift_fields(frame, op) -> dict:
    """DrawOp's 3-D fields for trace op ``op`` drawn on (an image derived from) ``frame``."""
    view = getattr(frame, "depth", None)
    if view is None:
        return {"lifted": False, "lift_error": "no depth image paired with this camera frame"}
    fields = {"frame_id": view.frame_id}
    if op.kind == "box":
        lifted = lift_box(view.metres, view.intrinsics, op.source_coords)
        fields |= {"position": point(lifted.position), "extent": Vector3(
            x=lifted.extent[0], y=lifted.extent[1], z=lifted.extent[2])}
        return fields | _validity(lifted)
    start, end, length = lift_line(view.metres, view.intrinsics, op.source_coords[:2], op.source_coords[2:])
    if length is None:
        return fields | _validity(start if not start.valid else end)
    middle = [(a + b) / 2 for a, b in zip(start.position, end.position)]
    return fields | {"position": point(middle), "start": point(start.position), "end": point(end.position),
                     "length_m": float(length), "lifted": True, "lift_error": ""}


def _validity(lifted: Lifted) -> dict:
    return {"lifted": lifted.valid, "lift_error": "" if lifted.valid else lifted.reason}


def markers_3d(ops, colours: dict[str, str], query: int, step: int) -> MarkerArray:
    """A step's lifted DrawOps as markers in the camera's optical frame: boxes as translucent cubes
    in the colour they were drawn in (``colours``: label -> palette name), lines as black strips,
    each with its label (lines: and length). A query's first step deletes the previous answer's."""
    markers = [Marker(action=Marker.DELETEALL)] if step == 1 else []
    for op in ops:
        if not op.lifted:
            continue
        base = {"header": Header(stamp=op.header.stamp, frame_id=op.frame_id), "ns": f"query{query}",
                "lifetime": Duration(sec=int(MARKER_LIFETIME_S)), "action": Marker.ADD}
        if op.kind == op.BOX:
            shape = Marker(type=Marker.CUBE, color=rgba(colours.get(op.label, PALETTE[0]), 0.5), **base)
            shape.pose.position = op.position
            shape.scale = Vector3(x=max(op.extent.x, 0.01), y=max(op.extent.y, 0.01), z=max(op.extent.z, 0.01))
            label = op.label
        else:
            shape = Marker(type=Marker.LINE_STRIP, color=rgba("black"), points=[op.start, op.end], **base)
            shape.scale.x = 0.02
            label = f"{op.label}: {op.length_m:.2f} m"
        text = Marker(type=Marker.TEXT_VIEW_FACING, color=rgba("white"), text=label, **base)
        text.pose.position = op.position
        text.scale.z = 0.1
        for m in (shape, text):
            m.pose.orientation.w = 1.0
            markers.append(m)
    for i, m in enumerate(markers):
        m.id = step * 1000 + i
    return MarkerArray(markers=markers)
