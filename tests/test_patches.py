"""The fast image path against the Hugging Face Qwen2.5-VL image processor it replaces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ros_vilasr.core import chat
from ros_vilasr.core.encoding import DialogueEncoding
from ros_vilasr.core.images import NO_RESIZE_MAX_PIXELS, prepare_image
from ros_vilasr.core.patches import Patcher
from ros_vilasr.core.processor import load_processor
from ros_vilasr.core.tiny_model import build_tiny_model

# (width, height) in the model's grid: square, wide, tall, the smallest, extreme aspect ratios
SIZES = [(56, 56), (784, 448), (448, 784), (28 * 40, 28 * 2), (28 * 2, 28 * 30), (252, 364), (1008, 1008),
         (28 * 150, 28)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def processor(tiny):
    return load_processor(tiny, max_pixels=NO_RESIZE_MAX_PIXELS)


def noise(width, height, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    return image.convert(mode)


@pytest.mark.parametrize("size", SIZES)
def test_pixel_values_match_the_processor(processor, size):
    image = noise(*size, seed=size[0] * size[1])
    patcher = Patcher(processor.image_processor)
    assert patcher.fits(image)
    values, grid = patcher(image)
    ref = processor.image_processor(images=[image], return_tensors="pt")
    assert torch.equal(grid, ref["image_grid_thw"])
    assert values.dtype == ref["pixel_values"].dtype and values.shape == ref["pixel_values"].shape
    torch.testing.assert_close(values, ref["pixel_values"], rtol=0, atol=1e-5)
    assert patcher.tokens(image) == int(grid.prod()) // 4


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_other_image_modes_are_converted_like_the_processor(processor, mode):
    image = noise(112, 84, mode=mode)
    values, _ = Patcher(processor.image_processor)(image)
    torch.testing.assert_close(values, processor.image_processor(images=[image], return_tensors="pt")["pixel_values"],
                               rtol=0, atol=1e-5)


def test_images_the_processor_would_resize_are_left_to_it(processor, tiny):
    patcher = Patcher(processor.image_processor)
    assert not patcher.fits(noise(100, 90))  # not a multiple of 28
    assert not patcher.fits(noise(28 * 201, 28))  # aspect ratio over 200: the processor refuses it
    assert not Patcher(load_processor(tiny, max_pixels=56 * 56).image_processor).fits(noise(112, 112))


def test_dialogue_encoding_equals_the_processor_on_a_multi_image_turn(processor):
    """Token ids and pixel values of a user turn with several images, fast path vs processor."""
    images = [prepare_image(noise(w, h, seed=i)).image for i, (w, h) in enumerate([(640, 480), (300, 900), (56, 56)])]
    message = {"role": "user", "content": [{"type": "image", "index": 0}, {"type": "text", "text": "and "},
                                           {"type": "image", "index": 1}, {"type": "image", "index": 2},
                                           {"type": "text", "text": " which is nearer?"}]}
    encoding = DialogueEncoding(processor)
    encoding.extend([message], images)
    ref = processor(text=[chat.render_message(message)], images=images, return_tensors="pt")
    assert encoding.input_ids == ref["input_ids"][0].tolist()
    vision = encoding.vision_inputs()
    assert torch.equal(vision["image_grid_thw"], ref["image_grid_thw"])
    torch.testing.assert_close(vision["pixel_values"], ref["pixel_values"], rtol=0, atol=1e-5)
    # an engine's per-turn feed: the same values, in one buffer the encoding keeps and reuses
    fed = encoding.vision_inputs(reuse=True)["pixel_values"]
    assert torch.equal(fed, vision["pixel_values"])
    last = encoding.vision_inputs(start=2, reuse=True)["pixel_values"]
    assert torch.equal(last, vision["pixel_values"][-len(last):]) and last.data_ptr() == fed.data_ptr()


def test_a_resized_image_still_goes_through_the_processor(processor):
    image = noise(100, 90)  # off the 28-px grid: the processor resizes it, so must be used
    message = {"role": "user", "content": [{"type": "image", "index": 0}, {"type": "text", "text": "?"}]}
    encoding = DialogueEncoding(processor)
    encoding.extend([message], [image])
    ref = processor(text=[chat.render_message(message)], images=[image], return_tensors="pt")
    assert encoding.input_ids == ref["input_ids"][0].tolist()
    assert torch.equal(encoding.vision_inputs()["pixel_values"], ref["pixel_values"])


def test_a_drawing_redoes_only_the_patches_it_touches_and_they_equal_a_full_patchify(processor, monkeypatch):
    """A drawn image's patches are its base's with the drawing's merge groups redone: exactly
    (uint8) what patchifying the whole drawn image gives, for boxes and lines anywhere."""
    from ros_vilasr.core.protocol import Box, Line
    from ros_vilasr.core.render import Drawing, draw, footprint

    patcher = Patcher(processor.image_processor)
    rng = np.random.default_rng(0)
    for (w, h) in [(784, 448), (252, 364), (56, 56)]:
        base = noise(w, h, seed=w)
        base_patches, grid = patcher.patchify(base)
        for trial in range(10):
            ops = [Box(1, f"b{k}", tuple(int(v) for v in rng.integers(-30, max(w, h) + 30, 4))) for k in range(2)]
            ends = [(int(rng.integers(w)), int(rng.integers(h))) for _ in range(2)]
            ops.append(Line(1, "l", *ends))
            drawing = Drawing(tuple(ops[:trial % 3]), tuple(ops[2:]) if trial % 2 else ())
            patches, new_grid = patcher.repatchify(draw(base, drawing), base_patches, footprint(drawing))
            full, _ = patcher.patchify(draw(base, drawing))
            assert torch.equal(patches, full) and torch.equal(new_grid, grid), (w, h, trial)

    # in a dialogue: the encoding finds the drawn image's base among its images and redoes a small crop
    base = noise(784, 448, seed=1)
    drawn = draw(base, Drawing((Box(1, "cup", (40, 40, 100, 90)),)))
    message = {"role": "user", "content": [{"type": "image", "index": 0}, {"type": "text", "text": "?"}]}
    encoding = DialogueEncoding(processor)
    encoding.extend([message], [base])
    areas = []
    original = Patcher.patchify
    monkeypatch.setattr(Patcher, "patchify", lambda self, im: areas.append(im.width * im.height) or original(self, im))
    encoding.extend([message, {"role": "user", "content": [{"type": "image", "index": 1}]}], [base, drawn])
    assert areas and sum(areas) <= 4 * 56 * 56  # the box's corner of the image, not its 784x448
    assert torch.equal(encoding.pixel_values[1], patcher.patchify(drawn)[0])
