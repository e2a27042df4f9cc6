"""Incremental tokenisation of a dialogue: the one encoder used by the transformers engine, SFT
labels and GRPO losses (train/serve parity).

Each message is tokenised once, when it is added: a turn costs its new tokens and its new images,
never the whole dialogue again. ``loss_mask`` marks the tokens the model produces (assistant
content and its closing ``<|im_end|>``); everything else — system, user turns, feedback images,
the ``<|im_start|>assistant`` header — is context.
"""

from __future__ import annotations

import torch

from . import chat
from .patches import Patcher
from .render import drawn_over


class DialogueEncoding:
    def __init__(self, processor, fast_images: bool = True):
        self.processor = processor
        tok = processor.tokenizer
        self._tok = tok
        # the Rust tokenizer behind a fast one: the same ids without transformers' Python layer
        self._backend = getattr(tok, "backend_tokenizer", None)
        self._gen_prompt = tok.encode(chat.GENERATION_PROMPT, add_special_tokens=False)
        self._end = tok.convert_tokens_to_ids(chat.END)
        self._newline = tok.encode("\n", add_special_tokens=False)
        self.image_token_id = tok.convert_tokens_to_ids("<|image_pad|>")
        # False: every image through the Hugging Face processor (the benchmark's baseline)
        self._patcher = Patcher(processor.image_processor) if fast_images else None
        self.input_ids: list[int] = []
        self.loss_mask: list[int] = []
        # per image: uint8 patches (fast path) or float pixel values (processor path)
        self.pixel_values: list[torch.Tensor] = []
        self.image_grid_thw: list[torch.Tensor] = []
        self._images: list = []  # the images themselves: a drawn one's base is found among them
        self._pixels: torch.Tensor | None = None  # vision_inputs(reuse=True)'s buffer
        self.n_messages = 0
        self.n_assistant = 0

    def __len__(self) -> int:
        return len(self.input_ids)

    def _append(self, ids: list[int], mask: int | list[int]) -> None:
        self.input_ids += ids
        self.loss_mask += [mask] * len(ids) if isinstance(mask, int) else mask

    def extend(self, messages: list[dict], images: list, assistant_ids=()) -> None:
        """Encode ``messages[self.n_messages:]``. ``assistant_ids[k]``, when given, holds the token
        ids the model generated for the k-th assistant turn (used instead of re-tokenising)."""
        for message in messages[self.n_messages:]:
            if message["role"] == "assistant":
                k = self.n_assistant
                ids = assistant_ids[k] if k < len(assistant_ids) else None
                self.add_assistant(message["content"], ids)
            else:
                self._add_context(message, images)

    def _add_context(self, message: dict, images: list) -> None:
        text = chat.render_message(message)
        pictures = [images[i] for i in chat.image_indices([message])]
        if pictures and self._patcher and all(map(self._patcher.fits, pictures)):
            for patches, grid in map(self._patchify, pictures):
                self.pixel_values.append(patches)
                self.image_grid_thw.append(grid)
            ids = self._expand_images(self._encode(text), pictures)
        elif pictures:  # an image the processor resizes (training data read from files)
            out = self.processor(text=[text], images=pictures, return_tensors="pt")
            grids = out["image_grid_thw"]
            self.pixel_values += out["pixel_values"].split(grids.prod(dim=1).tolist())
            self.image_grid_thw += grids.split(1)
            ids = out["input_ids"][0].tolist()
        else:
            ids = self._encode(text)
        self._images += pictures
        self._append(ids, 0)
        self.n_messages += 1

    def _patchify(self, image):
        """A drawing on an image of this dialogue redoes only the patches its strokes touch."""
        if drawn := drawn_over(image):
            base, rects = drawn
            k = next((i for i, known in enumerate(self._images) if known is base), None)
            if k is not None and self.pixel_values[k].dtype == torch.uint8 and base.size == image.size:
                return self._patcher.repatchify(image, self.pixel_values[k], rects)
        return self._patcher.patchify(image)

    def _expand_images(self, ids: list[int], pictures: list) -> list[int]:
        """Each image's one placeholder token repeated once per visual token, as the processor does
        (special tokens never merge with their neighbours, so expanding ids equals expanding text)."""
        counts = iter([self._patcher.tokens(p) for p in pictures])
        out = []
        for t in ids:
            out.extend([t] * next(counts) if t == self.image_token_id else [t])
        return out

    def _encode(self, text: str) -> list[int]:
        if self._backend is not None:
            return self._backend.encode(text, add_special_tokens=False).ids
        return self._tok.encode(text, add_special_tokens=False)

    def add_assistant(self, text: str | None = None, ids: list[int] | None = None) -> None:
        """Append an assistant turn: generated ``ids`` as they came, or ``text`` tokenised."""
        if ids is not None:
            ids = list(ids)
            self._append(self._gen_prompt, 0)
            self._append(ids, 1)
            if not ids or ids[-1] != self._end:  # cut by the token budget: close the turn
                self._append([self._end], 0)
            self._append(self._newline, 0)
        else:
            full = chat.GENERATION_PROMPT + text + chat.END + "\n"
            start, stop = len(chat.GENERATION_PROMPT), len(full) - 1
            if self._backend is not None:
                enc = self._backend.encode(full, add_special_tokens=False)
                ids, offsets = enc.ids, enc.offsets
            else:
                enc = self._tok(full, add_special_tokens=False, return_offsets_mapping=True)
                ids, offsets = enc["input_ids"], enc["offset_mapping"]
            self._append(ids, [int(a >= start and b <= stop) for a, b in offsets])
        self.n_messages += 1
        self.n_assistant += 1

    def prompt_ids(self) -> list[int]:
        """The dialogue followed by the generation prompt, ready for the next assistant turn."""
        return self.input_ids + self._gen_prompt

    def vision_inputs(self, start: int = 0, device=None, reuse: bool = False) -> dict:
        """Pixel values and grids of the dialogue's images from the ``start``-th (0-based) on.
        ``reuse``: the pixel values go into a buffer this encoding keeps (an engine's per-turn feed:
        no fresh memory each turn); they are valid until its next ``reuse`` call. Grids stay on the
        CPU, where mRoPE positions are worked out; a caller feeding a model moves them with its batch."""
        if len(self.pixel_values) <= start:
            return {}
        new = self.pixel_values[start:]
        grids = torch.cat(self.image_grid_thw[start:])
        if not all(v.dtype == torch.uint8 for v in new):  # the processor's floats
            return {"pixel_values": torch.cat([v.to(device) for v in new]), "image_grid_thw": grids}
        p = self._patcher
        size = (sum(len(v) for v in new), new[0].shape[1] * p.temporal * new[0].shape[2])
        if reuse:
            if self._pixels is None or self._pixels.device != torch.device(device or "cpu") \
                    or self._pixels.numel() < size[0] * size[1]:
                self._pixels = torch.empty(size[0] * size[1], device=device)
            out = self._pixels[:size[0] * size[1]].view(size)
        else:
            out = torch.empty(size, device=device)
        row = 0
        for v in new:
            p.pixel_values(v, device, out=out[row:row + len(v)])
            row += len(v)
        return {"pixel_values": out, "image_grid_thw": grids}

    def mm_token_type_ids(self, ids: list[int]) -> list[int]:
        # Qwen2.5-VL computes its 3-D (mRoPE) positions from these; without them it silently
        # falls back to text positions for image tokens.
        return [int(t == self.image_token_id) for t in ids]

    def model_inputs(self) -> dict:
        """Tensors for a training forward pass over the whole dialogue (batch of one)."""
        ids = torch.tensor([self.input_ids])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                "mm_token_type_ids": torch.tensor([self.mm_token_type_ids(self.input_ids)]),
                **self.vision_inputs()}


def encode_dialogue(processor, messages: list[dict], images: list, assistant_ids=()) -> DialogueEncoding:
    encoding = DialogueEncoding(processor)
    encoding.extend(messages, images, assistant_ids)
    return encoding
