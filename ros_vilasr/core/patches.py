"""Qwen2.5-VL pixel values without the Hugging Face image processor, for images already in the
model's grid (sessions resize every image once, ``images.prepare_image``).

The processor converts to float, rescales, normalises and patchifies in numpy passes over the whole
image (~15 ms for a 448·28·28 image on 2 cores) and keeps 8 MB of floats per such image. Here an
image becomes its patches once, as bytes (one strided copy, 1 MB), and floats only when the model is
fed them: one affine per channel, on the model's device, and a copy that repeats each patch over
time (the temporal patch of a still image is the image twice). Equal to the processor's output
within float rounding (tests/test_patches.py). Images the processor would resize go to it instead.
A drawn image is patchified from its base's patches, redoing only where the drawing touched.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

GAP = 6  # merge groups: a narrower clean gap between two dirty runs is redone rather than cropped around


def _runs(row: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) runs of True in ``row``, gaps narrower than ``GAP`` bridged."""
    runs: list[list[int]] = []
    for x in np.flatnonzero(row).tolist():
        if runs and x - runs[-1][1] < GAP:
            runs[-1][1] = x + 1
        else:
            runs.append([x, x + 1])
    return [tuple(r) for r in runs]


class Patcher:
    def __init__(self, image_processor):
        ip = image_processor
        self.patch, self.merge, self.temporal = ip.patch_size, ip.merge_size, ip.temporal_patch_size
        self.min_pixels, self.max_pixels = ip.size["shortest_edge"], ip.size["longest_edge"]
        self.resizes = ip.do_resize
        mean = np.asarray(ip.image_mean if ip.do_normalize else [0.0] * 3, dtype=np.float64)
        std = np.asarray(ip.image_std if ip.do_normalize else [1.0] * 3, dtype=np.float64)
        scale = ip.rescale_factor if ip.do_rescale else 1.0
        # (x · scale − mean) / std  ==  x · a + b
        self._a = torch.from_numpy(scale / std).float().view(1, 3, 1)
        self._b = torch.from_numpy(-mean / std).float().view(1, 3, 1)

    def fits(self, image: Image.Image) -> bool:
        """True when the processor would leave ``image`` at its size (so both paths agree)."""
        w, h = image.size
        factor = self.patch * self.merge
        if h % factor or w % factor or max(w, h) > 200 * min(w, h):  # the processor's limits
            return False
        return not self.resizes or self.min_pixels <= w * h <= self.max_pixels

    def tokens(self, image: Image.Image) -> int:
        """How many ``<|image_pad|>`` tokens the image takes in the prompt."""
        w, h = image.size
        return (h // self.patch) * (w // self.patch) // self.merge**2

    def patchify(self, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 patches [patches, 3, patch²] in the model's order, image_grid_thw [1, 3]).
        Kept as bytes: an eighth of the float pixel values' memory, normalised only when fed."""
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        x = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
        p, m = self.patch, self.merge
        gh, gw = rgb.height // p, rgb.width // p
        # rows in merge-group order (gh/m, gw/m, m, m), each row (channel, patch row, patch col)
        x = x.view(gh // m, m, p, gw // m, m, p, 3).permute(0, 3, 1, 4, 6, 2, 5)
        return x.reshape(gh * gw, 3, p * p), torch.tensor([[1, gh, gw]])

    def repatchify(self, image: Image.Image, base: torch.Tensor, rects) -> tuple[torch.Tensor, torch.Tensor]:
        """``patchify(image)`` for an image that equals the one ``base`` (its patches) came from
        outside ``rects`` (a drawing's footprint): only the merge groups the rects touch are redone.
        A row of groups is cut into runs of dirty groups (bridging gaps narrower than ``GAP``), and
        neighbouring rows with the same runs share one crop per run: a box costs a few crops."""
        f, m = self.patch * self.merge, self.merge
        gw, gh = image.width // f, image.height // f
        dirty = np.zeros((gh, gw), dtype=bool)
        for x0, y0, x1, y1 in rects:
            dirty[max(0, y0 // f):max(0, -(-y1 // f)), max(0, x0 // f):max(0, -(-x1 // f))] = True
        rows = [_runs(row) for row in dirty]
        out = base.clone()
        groups = out.view(gh, gw, m * m, 3, self.patch**2)
        gy = 0
        while gy < gh:
            top, runs = gy, rows[gy]
            while gy < gh and rows[gy] == runs:
                gy += 1
            for x0, x1 in runs:
                patches, _ = self.patchify(image.crop((x0 * f, top * f, x1 * f, gy * f)))
                groups[top:gy, x0:x1] = patches.view(gy - top, x1 - x0, m * m, 3, self.patch**2)
        return out, torch.tensor([[1, gh * m, gw * m]])

    def pixel_values(self, patches: torch.Tensor, device=None, out: torch.Tensor | None = None) -> torch.Tensor:
        """Float pixel values [patches, 3·temporal·patch²] of uint8 ``patches``, normalised on
        ``device`` (4 bytes fewer per value to copy to a GPU), written into ``out`` when given (a
        buffer the caller reuses: no allocation, no fresh pages per turn)."""
        n, channels, area = patches.shape
        if out is None:
            out = torch.empty((n, channels * self.temporal * area), device=device)
        frames = out.view(n, channels, self.temporal, area)
        first = frames[:, :, 0]
        first.copy_(patches.to(first.device, non_blocking=True)).mul_(self._a.to(first.device)).add_(
            self._b.to(first.device))
        frames[:, :, 1:] = first.unsqueeze(2)  # a still image is its own temporal neighbour
        return out

    def __call__(self, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        """What the Hugging Face image processor returns for one image: (pixel_values, image_grid_thw)."""
        patches, grid = self.patchify(image)
        return self.pixel_values(patches), grid
