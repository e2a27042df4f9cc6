"""Qwen2.5-VL processor without torchvision (stock / ViLaSR checkpoints and our tiny models).

transformers 5 builds `Qwen2_5_VLProcessor` only with a video processor, which needs torchvision
(never installed on CPU machines here). Videos are lists of frames in this project, so an
image-only subclass is all we need. The image processor is always the PIL one, so pixel values are
identical on every machine, with or without torchvision.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer, Qwen2_5_VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil


class Qwen2_5_VLImageOnlyProcessor(Qwen2_5_VLProcessor):
    """`Qwen2_5_VLProcessor` without a video processor.

    transformers derives a processor's sub-processors from its constructor's signature, so leaving
    `video_processor` out of it is what removes the video processor.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        kwargs.pop("video_processor", None)
        super().__init__(
            image_processor, tokenizer, video_processor=None, chat_template=chat_template, **kwargs
        )


def load_processor(
    path: str | Path, max_pixels: int | None = None, min_pixels: int | None = None
) -> Qwen2_5_VLImageOnlyProcessor:
    """Load the processor of a Qwen2.5-VL checkpoint directory.

    `max_pixels` / `min_pixels` override the checkpoint's image-size bounds (smart resize).
    """
    path = str(path)
    # AutoProcessor.from_pretrained is no help here: without torchvision it returns only the
    # tokenizer (our checkpoints, whose processor_class is the subclass above) or raises ImportError
    # "Qwen2VLVideoProcessor requires the Torchvision library" (stock Qwen checkpoints); with
    # torchvision its image processor is not the PIL one. So build the image-only processor from its
    # parts, the same way for every checkpoint.
    sizes = {"min_pixels": min_pixels, "max_pixels": max_pixels}
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(
        path, **{k: v for k, v in sizes.items() if v is not None}
    )
    tokenizer = AutoTokenizer.from_pretrained(path)
    processor_dict, _ = Qwen2_5_VLImageOnlyProcessor.get_processor_dict(path)
    chat_template = processor_dict.get("chat_template") or tokenizer.chat_template
    return Qwen2_5_VLImageOnlyProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template
    )
