"""Image preparation: Qwen smart resize with the scale factors kept (spec §4).

The model reasons in the resized grid; robots need source pixels. Every input image is wrapped in
a ``ModelImage`` that remembers both sizes so any coordinate can be mapped back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

FACTOR = 28
MIN_PIXELS = 4 * 28 * 28  # 3136
MAX_PIXELS_EVAL = 448 * 28 * 28  # 351232, evaluation and the node
MAX_PIXELS_TRAIN = 256 * 28 * 28  # 200704, RL and training images
# Sessions resize images here, once; processors that meet them afterwards are loaded with this
# bound so they never resize again (load_processor(path, max_pixels=NO_RESIZE_MAX_PIXELS)).
NO_RESIZE_MAX_PIXELS = 16384 * 28 * 28
VIDEO_FRAMES = 16  # spec §4: video questions see 16 uniformly sampled frames


@dataclass(frozen=True)
class ModelImage:
    """An input image resized for the model, plus what is needed to map coordinates back."""

    image: Image.Image  # RGB, in the model's grid
    source_size: tuple[int, int]  # (width, height) of the original image

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size

    @property
    def scale(self) -> tuple[float, float]:
        """Multiply model-grid coordinates by these to get source pixels."""
        return self.source_size[0] / self.size[0], self.source_size[1] / self.size[1]

    def to_source(self, coords) -> list[float]:
        """Map a flat [x, y, x, y, ...] list from the model grid to source pixels."""
        sx, sy = self.scale
        return [c * (sx if i % 2 == 0 else sy) for i, c in enumerate(coords)]


def resized_size(width: int, height: int, max_pixels: int = MAX_PIXELS_EVAL,
                 min_pixels: int = MIN_PIXELS) -> tuple[int, int]:
    """(width, height) after Qwen2.5-VL's smart resize (transformers' own, imported on first use
    so that reading this module's constants stays light)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    h, w = smart_resize(height, width, factor=FACTOR, min_pixels=min_pixels, max_pixels=max_pixels)
    return w, h


def prepare_image(image: Image.Image, max_pixels: int = MAX_PIXELS_EVAL,
                  min_pixels: int = MIN_PIXELS) -> ModelImage:
    """Convert to RGB and smart-resize (bicubic, as Qwen's processor does)."""
    if image.width < 1 or image.height < 1:
        raise ValueError(f"empty image ({image.width}x{image.height})")
    rgb = image.convert("RGB")
    size = resized_size(rgb.width, rgb.height, max_pixels, min_pixels)
    resized = rgb if size == rgb.size else rgb.resize(size, Image.Resampling.BICUBIC)
    return ModelImage(resized, rgb.size)


def evenly_spaced(items: list, n: int) -> list:
    """``n`` items evenly spaced over ``items`` (all when n <= 0 or there are fewer), keeping the
    first and the last; n == 1 keeps the last (the newest frame)."""
    if n <= 0 or len(items) <= n:
        return list(items)
    if n == 1:
        return [items[-1]]
    picks = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in dict.fromkeys(picks.tolist())]
