"""Per-camera key-frame buffer: bounded in count, age and memory; plain Python + numpy (no ROS).

Every camera keeps its latest frame (for "latest per camera" queries) and a short history of key
frames: a frame becomes a key frame when at least ``min_interval_s`` passed since the camera's last
key frame AND it differs visibly from it (mean absolute difference of small grayscale thumbnails
≥ ``change_threshold``). At most ``per_camera`` key frames are kept, nothing older than
``max_age_s``, and the bytes of everything held never exceed ``memory_bytes`` — counting the next
frame, which is in memory (twice) before it is offered: the oldest key frames across all cameras go first,
then other cameras' latest frames; a frame larger than the whole budget is refused. Times are
arrival times (monotonic clock), so recordings replayed with old stamps behave like live cameras.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ros_vilasr.core.images import evenly_spaced

THUMBNAIL_SIDE = 32  # pixels (about): enough to see a scene change, cheap at 30 Hz
INCOMING_COPIES = 2  # a frame being received exists twice: the middleware's and the message's


def thumbnail(pixels: np.ndarray, side: int = THUMBNAIL_SIDE) -> np.ndarray:
    """A grayscale uint8 image of at most side x side pixels by strided sampling (no resize cost)."""
    h, w = pixels.shape[:2]
    small = pixels[:: -(-h // side), :: -(-w // side)]
    if small.ndim == 3:
        small = small[:, :, :3].mean(axis=2)
    return small.astype(np.uint8)


def visual_change(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """Mean absolute difference of two thumbnails in [0, 1]; 1.0 when they cannot be compared."""
    if a is None or b is None or a.shape != b.shape:
        return 1.0
    return float(np.abs(a.astype(np.int16) - b).mean()) / 255.0


@dataclass
class KeyFrameSettings:
    min_interval_s: float = 0.5
    change_threshold: float = 0.02
    per_camera: int = 16
    max_age_s: float = 60.0
    memory_bytes: int = 512 * 2**20


@dataclass(eq=False)
class Frame:
    camera: str
    header: Any  # the source message's header, opaque here
    payload: Any  # has .nbytes and .to_pil()
    received: float  # arrival time, monotonic seconds
    thumb: np.ndarray | None = None
    depth: Any = None  # the aligned depth and intrinsics it was taken with (node.depth.DepthView)

    @property
    def nbytes(self) -> int:
        extra = sum(x.nbytes for x in (self.thumb, self.depth) if x is not None)
        return self.payload.nbytes + extra


@dataclass
class _Camera:
    latest: Frame | None = None
    keyframes: deque[Frame] = field(default_factory=deque)


class FrameTooLarge(ValueError):
    pass


class KeyFrameBuffer:
    def __init__(self, settings: KeyFrameSettings | None = None, clock: Callable[[], float] = time.monotonic):
        self.settings = settings or KeyFrameSettings()
        self.clock = clock
        self._cameras: dict[str, _Camera] = {}
        self._lock = threading.Lock()
        self.evictions = 0  # frames dropped for the memory budget, ever

    # -- writing -------------------------------------------------------------------------------

    def offer(self, camera: str, header: Any, payload: Any,
              pixels: Callable[[], np.ndarray] | np.ndarray | None = None) -> bool:
        """Buffer a frame as ``camera``'s latest and maybe as a key frame (returns which).

        ``pixels`` (array or zero-argument callable) is read only when the frame is due for a
        key-frame check. Raises FrameTooLarge when the frame alone exceeds the memory budget."""
        s = self.settings
        now = self.clock()
        frame = Frame(camera, header, payload, now)
        if frame.nbytes > s.memory_bytes:
            raise FrameTooLarge(f"frame of {frame.nbytes} bytes exceeds the buffer budget of "
                                f"{s.memory_bytes} bytes")
        with self._lock:
            cam = self._cameras.setdefault(camera, _Camera())
            self._prune(now)
            last = cam.keyframes[-1] if cam.keyframes else None
            is_key = False
            if last is None or now - last.received >= s.min_interval_s:
                if pixels is not None:
                    frame.thumb = thumbnail(pixels() if callable(pixels) else pixels)
                is_key = last is None or visual_change(frame.thumb, last.thumb) >= s.change_threshold
            if frame.nbytes > s.memory_bytes:  # the thumbnail tipped it over
                raise FrameTooLarge(f"frame of {frame.nbytes} bytes exceeds the buffer budget of "
                                    f"{s.memory_bytes} bytes")
            cam.latest = frame
            if is_key:
                cam.keyframes.append(frame)
                while len(cam.keyframes) > s.per_camera:
                    cam.keyframes.popleft()
            self._fit(keep=frame)
            return is_key

    def _prune(self, now: float) -> None:
        horizon = now - self.settings.max_age_s
        for cam in self._cameras.values():
            while cam.keyframes and cam.keyframes[0].received < horizon:
                cam.keyframes.popleft()
            if cam.latest is not None and cam.latest.received < horizon:
                cam.latest = None

    def _held(self) -> dict[int, Frame]:
        """Every frame held once (a latest frame is often also a key frame)."""
        held = {}
        for cam in self._cameras.values():
            for f in (*cam.keyframes, cam.latest):
                if f is not None:
                    held[id(f)] = f
        return held

    def _fit(self, keep: Frame) -> None:
        """Evict until the budget holds: oldest key frames first, then other cameras' latest.

        Room for the next frame (taken to be like ``keep``) is left free: it is in memory before
        it can be offered, twice while it is received (the middleware's copy and the message's),
        and it must not push the process over the budget."""
        limit = self.settings.memory_bytes - INCOMING_COPIES * keep.payload.nbytes
        while sum(f.nbytes for f in self._held().values()) > limit:
            heads = [c.keyframes[0] for c in self._cameras.values()
                     if c.keyframes and c.keyframes[0] is not keep]
            self.evictions += 1
            if heads:
                self._cameras[min(heads, key=lambda f: f.received).camera].keyframes.popleft()
                continue
            others = [c for c in self._cameras.values() if c.latest is not None and c.latest is not keep]
            if not others:
                self.evictions -= 1
                break  # only ``keep`` is left, and it fits (checked in offer)
            min(others, key=lambda c: c.latest.received).latest = None

    def apply(self, settings: KeyFrameSettings) -> None:
        """New settings; what they no longer allow is dropped now."""
        with self._lock:
            self.settings = settings
            for cam in self._cameras.values():
                while len(cam.keyframes) > settings.per_camera:
                    cam.keyframes.popleft()
            self._prune(self.clock())
            latest = [c.latest for c in self._cameras.values() if c.latest is not None]
            if latest:
                self._fit(keep=max(latest, key=lambda f: f.received))

    def clear(self) -> None:
        with self._lock:
            self._cameras.clear()

    # -- reading -------------------------------------------------------------------------------

    def latest(self, cameras: Iterable[str]) -> list[Frame]:
        """The latest frame of each camera that has one, in the given camera order."""
        with self._lock:
            self._prune(self.clock())
            return [c.latest for name in cameras if (c := self._cameras.get(name)) and c.latest]

    def window(self, cameras: Iterable[str], max_frames: int = 0, window_s: float = 0.0) -> list[Frame]:
        """Up to ``max_frames`` (0 = all) key frames of the last ``window_s`` seconds (0 = all
        buffered), spread evenly over time, oldest first; the newest is always included."""
        with self._lock:
            now = self.clock()
            self._prune(now)
            frames = [f for name in cameras if (c := self._cameras.get(name)) for f in c.keyframes
                      if window_s <= 0 or f.received >= now - window_s]
        frames.sort(key=lambda f: f.received)
        return evenly_spaced(frames, max_frames)

    def stats(self) -> dict[str, dict[str, int]]:
        """Per camera: key frames kept and bytes held; plus the total under ``"*"``."""
        with self._lock:
            self._prune(self.clock())
            out = {}
            for name, cam in self._cameras.items():
                mine = {id(f): f for f in (*cam.keyframes, cam.latest) if f is not None}
                out[name] = {"keyframes": len(cam.keyframes), "bytes": sum(f.nbytes for f in mine.values())}
            out["*"] = {"keyframes": sum(v["keyframes"] for v in out.values()),
                        "bytes": sum(f.nbytes for f in self._held().values())}
            return out

    @property
    def total_bytes(self) -> int:
        return self.stats()["*"]["bytes"]
