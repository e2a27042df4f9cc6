"""Camera frames <-> numpy / PIL, with strict validation (no cv_bridge on PyPI).

The decoding core takes plain fields (width, height, encoding, step, data) so it is testable
without ROS; thin wrappers read and build sensor_msgs messages. A frame that cannot be trusted
raises ``FrameError`` with a short ``kind`` (what diagnostics count and the log-once key) and a
human-readable reason; the node drops it and keeps running.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
JPEG_MAGIC, JPEG_END = b"\xff\xd8\xff", b"\xff\xd9"
PNG_MAGIC, PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"
MIN_SIDE = 28  # one model patch: a thinner frame has nothing the model can see
MAX_ASPECT = 200  # Qwen2.5-VL's smart resize refuses anything more elongated


class FrameError(ValueError):
    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        # unsupported_encoding | empty | bad_step | size_mismatch | undecodable | too_large | bad_shape
        self.kind = kind
        self.reason = reason


def check_shape(width: int, height: int, max_pixels: int) -> None:
    """Refuse at ingest what would exhaust memory or fail every later query that used it."""
    if width * height > max_pixels:
        raise FrameError("too_large", f"{width}x{height} frame ({width * height / 1e6:.1f} MP) exceeds "
                         f"max_frame_pixels = {max_pixels} ({max_pixels / 1e6:.1f} MP)")
    if min(width, height) < MIN_SIDE:
        raise FrameError("bad_shape", f"{width}x{height} frame: a side is under {MIN_SIDE} px (one model patch)")
    if max(width, height) / min(width, height) > MAX_ASPECT:
        raise FrameError("bad_shape", f"{width}x{height} frame: aspect ratio over {MAX_ASPECT}, which the "
                         "model's image resize refuses")


# -- raw sensor_msgs/Image ------------------------------------------------------------------------

def decode_raw(width: int, height: int, encoding: str, step: int, data) -> np.ndarray:
    """A zero-copy (height, width[, channels]) uint8 view of a raw frame, in its own channel order."""
    channels = CHANNELS.get(encoding)
    if channels is None:
        raise FrameError("unsupported_encoding", f"unsupported encoding {encoding!r} "
                         f"(supported: {', '.join(CHANNELS)})")
    if width <= 0 or height <= 0:
        raise FrameError("empty", f"empty image ({width}x{height})")
    row = width * channels
    if step < row:
        raise FrameError("bad_step", f"step {step} is smaller than width x channels = {row}")
    size = len(data)
    if size != step * height:
        raise FrameError("size_mismatch", f"data has {size} bytes but step x height = {step * height}")
    rows = np.frombuffer(data, dtype=np.uint8).reshape(height, step)[:, :row]
    return rows.reshape(height, width) if channels == 1 else rows.reshape(height, width, channels)


def to_rgb(array: np.ndarray, encoding: str) -> np.ndarray:
    """(H, W, 3) RGB from a decoded frame in ``encoding`` (bgr8 for decoded compressed frames)."""
    if encoding == "mono8":
        return np.repeat(array[:, :, None], 3, axis=2)
    if encoding in ("bgr8", "bgra8"):
        return np.ascontiguousarray(array[:, :, 2::-1])
    return np.ascontiguousarray(array[:, :, :3])


# -- sensor_msgs/CompressedImage -------------------------------------------------------------------

def declared_size(raw: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG or PNG header, read without decoding the pixels."""
    try:
        with Image.open(io.BytesIO(raw)) as header:
            return header.size
    except Image.DecompressionBombError as exc:
        raise FrameError("too_large", f"compressed frame declares a decompression bomb ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 - any header Pillow cannot read is a bad frame
        raise FrameError("undecodable", f"unreadable image header ({type(exc).__name__}: {exc})") from exc


def decode_compressed(data, max_pixels: int | None = None) -> np.ndarray:
    """(H, W, 3) BGR pixels of a JPEG or PNG frame; truncated or corrupt data is refused, and
    with ``max_pixels`` so is a frame whose header declares a shape ``check_shape`` refuses
    (checked before decoding: a small PNG can declare 10000x10000).

    The format is read from the magic bytes, not the message's free-text ``format`` field."""
    raw = bytes(data)
    if not raw:
        raise FrameError("empty", "empty compressed data")
    if raw.startswith(JPEG_MAGIC):
        # libjpeg decodes a truncated stream with a warning and grey fill: require the end marker.
        if not raw.rstrip(b"\0").endswith(JPEG_END):
            raise FrameError("undecodable", f"truncated JPEG ({len(raw)} bytes, no end marker)")
    elif raw.startswith(PNG_MAGIC):
        if not raw.endswith(PNG_END):
            raise FrameError("undecodable", f"truncated PNG ({len(raw)} bytes, no IEND chunk)")
    else:
        raise FrameError("undecodable", f"compressed data is neither JPEG nor PNG (starts {raw[:4].hex()})")
    if max_pixels is not None:
        check_shape(*declared_size(raw), max_pixels)
    pixels = cv2.imdecode(np.frombuffer(raw, dtype=np.uint8), cv2.IMREAD_COLOR)
    if pixels is None or pixels.size == 0:
        raise FrameError("undecodable", f"cannot decode the {len(raw)}-byte compressed frame")
    return pixels


@dataclass(frozen=True)
class RawPayload:
    """A buffered raw frame: a view on the message's data, converted only when a query uses it."""

    array: np.ndarray
    encoding: str
    nbytes: int  # what holding it costs: the whole message buffer the view keeps alive

    def to_pil(self) -> Image.Image:
        return Image.fromarray(to_rgb(self.array, self.encoding), "RGB")


@dataclass(frozen=True)
class CompressedPayload:
    """A buffered compressed frame: its bytes (small), decoded again only when a query uses it."""

    data: bytes
    nbytes: int  # the bytes plus the decoded pixels a query will hold: what the budget counts

    def to_pil(self) -> Image.Image:
        return Image.fromarray(to_rgb(decode_compressed(self.data), "bgr8"), "RGB")


def raw_payload(msg, max_pixels: int) -> tuple[RawPayload, np.ndarray]:
    """Validate a sensor_msgs/Image: its payload and its pixels (for the key-frame thumbnail)."""
    array = decode_raw(msg.width, msg.height, msg.encoding, msg.step, msg.data)
    check_shape(msg.width, msg.height, max_pixels)
    return RawPayload(array, msg.encoding, len(msg.data)), array


def compressed_payload(msg, max_pixels: int) -> tuple[CompressedPayload, np.ndarray]:
    """Validate a sensor_msgs/CompressedImage: its payload and its decoded pixels."""
    data = bytes(msg.data)
    pixels = decode_compressed(data, max_pixels)
    return CompressedPayload(data, len(data) + pixels.nbytes), pixels


# -- outputs ---------------------------------------------------------------------------------------

def rgba(name: str, alpha: float = 1.0):
    """std_msgs/ColorRGBA of a PIL colour name (the renderer's palette)."""
    from PIL import ImageColor
    from std_msgs.msg import ColorRGBA

    r, g, b = ImageColor.getrgb(name)[:3]
    return ColorRGBA(r=r / 255.0, g=g / 255.0, b=b / 255.0, a=alpha)


def to_image_msg(image: Image.Image, header):
    """sensor_msgs/Image (rgb8) of a PIL image, carrying ``header`` (its source frame's)."""
    from sensor_msgs.msg import Image as ImageMsg

    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    msg = ImageMsg(header=header, height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8",
                   is_bigendian=0, step=rgb.shape[1] * 3)
    msg.data = rgb.tobytes()
    return msg
