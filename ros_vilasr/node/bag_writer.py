"""Record camera frames (colour, depth, camera_info) into a rosbag2 (MCAP or sqlite3) with
``rosbags`` — no ROS install needed.

The messages are serialised to CDR by rosbags' own typestore, so anything that reads rosbag2
(``ros2 bag``, Foxglove, our ``vilasr_bag_player``) can play the result.

    with ImageBagWriter(out_dir) as bag:
        bag.write_image("/cam/image_raw", frame, stamp_ns, frame_id="cam")
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from rosbags.rosbag2 import Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode, StoragePlugin
from rosbags.typesys import Stores, get_typestore

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}


def ros2_typestore():
    """The newest ROS 2 message store this rosbags version ships (Kilted, else Jazzy)."""
    store = getattr(Stores, "ROS2_KILTED", None) or Stores.ROS2_JAZZY
    return get_typestore(store)


def split_stamp(stamp_ns: int) -> tuple[int, int]:
    return int(stamp_ns // 1_000_000_000), int(stamp_ns % 1_000_000_000)


class ImageBagWriter:
    """Writes ``sensor_msgs/Image`` and ``sensor_msgs/CompressedImage`` frames to a new bag.

    ``storage``: "mcap" (default) or "sqlite3". ``compress``: zstd chunk compression (MCAP only;
    rendered or static scenes shrink 20-50x, so a few seconds of camera fit in a repository)."""

    def __init__(self, path: str | Path, storage: str = "mcap", compress: bool = True):
        plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
        if storage not in plugins:
            raise ValueError(f"storage must be one of {', '.join(plugins)}, not {storage!r}")
        self.path = Path(path)
        self.store = ros2_typestore()
        self._writer = Writer(self.path, version=9, storage_plugin=plugins[storage])
        if compress and storage == "mcap":
            self._writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        self._writer.open()
        self._connections: dict[str, object] = {}
        self._types = self.store.types

    # -- context manager ---------------------------------------------------------------------------
    def __enter__(self) -> ImageBagWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._writer.close()  # keep what was written; the bag stays readable

    def close(self) -> None:
        self._writer.close()

    # -- writing ----------------------------------------------------------------------------------
    def _connection(self, topic: str, msgtype: str):
        conn = self._connections.get(topic)
        if conn is None:
            conn = self._writer.add_connection(topic, msgtype, typestore=self.store)
            self._connections[topic] = conn
        elif conn.msgtype != msgtype:
            raise ValueError(f"topic {topic} already records {conn.msgtype}, not {msgtype}")
        return conn

    def _header(self, stamp_ns: int, frame_id: str):
        sec, nanosec = split_stamp(stamp_ns)
        time_cls = self._types["builtin_interfaces/msg/Time"]
        return self._types["std_msgs/msg/Header"](stamp=time_cls(sec=sec, nanosec=nanosec), frame_id=frame_id)

    def write(self, topic: str, msgtype: str, message, log_time_ns: int) -> None:
        """Any rosbags message object (from ``self.store.types``), logged at ``log_time_ns``."""
        conn = self._connection(topic, msgtype)
        self._writer.write(conn, int(log_time_ns), self.store.serialize_cdr(message, msgtype))

    def write_image(self, topic: str, image: Image.Image | np.ndarray, stamp_ns: int,
                    frame_id: str, encoding: str = "rgb8") -> None:
        """One raw frame; header stamp = bag log time = ``stamp_ns``."""
        pixels = np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
        channels = _CHANNELS.get(encoding)
        if channels is None:
            raise ValueError(f"unsupported encoding {encoding!r}")
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        if pixels.shape[2] != channels:
            raise ValueError(f"{encoding} needs {channels} channels, the image has {pixels.shape[2]}")
        height, width = pixels.shape[:2]
        msg = self._types[IMAGE](
            header=self._header(stamp_ns, frame_id), height=height, width=width, encoding=encoding,
            is_bigendian=0, step=width * channels, data=pixels.reshape(-1))
        self.write(topic, IMAGE, msg, stamp_ns)

    def write_depth(self, topic: str, metres: np.ndarray, stamp_ns: int, frame_id: str) -> None:
        """One depth image as a depth camera driver sends it: 16UC1 millimetres, 0 = no reading
        (where ``metres`` is not finite or out of the 16-bit range)."""
        valid = np.isfinite(metres) & (metres > 0) & (metres < 65.535)
        mm = np.where(valid, np.round(np.where(valid, metres, 0) * 1000), 0).astype("<u2")
        height, width = mm.shape
        msg = self._types[IMAGE](
            header=self._header(stamp_ns, frame_id), height=height, width=width, encoding="16UC1",
            is_bigendian=0, step=width * 2, data=np.frombuffer(mm.tobytes(), dtype=np.uint8))
        self.write(topic, IMAGE, msg, stamp_ns)

    def write_camera_info(self, topic: str, width: int, height: int, focal: float, stamp_ns: int,
                          frame_id: str) -> None:
        """An undistorted pinhole camera_info: focal length in pixels, principal point at the centre."""
        cx, cy = width / 2, height / 2
        roi = self._types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                              do_rectify=False)
        msg = self._types[CAMERA_INFO](
            header=self._header(stamp_ns, frame_id), height=height, width=width, distortion_model="plumb_bob",
            d=np.zeros(5), k=np.array([focal, 0, cx, 0, focal, cy, 0, 0, 1], dtype=np.float64),
            r=np.eye(3).reshape(-1), p=np.array([focal, 0, cx, 0, 0, focal, cy, 0, 0, 0, 1, 0], dtype=np.float64),
            binning_x=0, binning_y=0, roi=roi)
        self.write(topic, CAMERA_INFO, msg, stamp_ns)

    def write_compressed(self, topic: str, image: Image.Image, stamp_ns: int, frame_id: str,
                         fmt: str = "jpeg", quality: int = 90) -> None:
        """One JPEG/PNG-compressed frame (for topics ending in ``/compressed``)."""
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format=fmt.upper(), quality=quality)
        msg = self._types[COMPRESSED_IMAGE](
            header=self._header(stamp_ns, frame_id), format=fmt,
            data=np.frombuffer(buf.getvalue(), dtype=np.uint8))
        self.write(topic, COMPRESSED_IMAGE, msg, stamp_ns)
