"""In-process Qwen2.5-VL through transformers (CPU or GPU; greedy or sampling; batched).

Each session's dialogue is encoded incrementally (``DialogueEncoding``): a turn tokenises only its
new messages and processes only its new images. Generated ids are kept as generated.
"""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict

import torch
from transformers import AutoModelForImageTextToText, StoppingCriteria, StoppingCriteriaList

from ..encoding import DialogueEncoding
from ..images import NO_RESIZE_MAX_PIXELS
from ..processor import load_processor
from ..session import Reply, Request


class _Cancelled(StoppingCriteria):
    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def resolve_device(device: str = "auto") -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


class TransformersEngine:
    def __init__(self, model, processor=None, device: str = "auto", dtype: str = "auto",
                 temperature: float = 0.75, top_p: float = 0.9, seed: int | None = None,
                 max_cached_dialogues: int = 1024):
        self.device = resolve_device(device)
        if isinstance(model, str) or model is None:
            if not model:
                raise ValueError("the transformers engine needs a model path or hub id")
            self.processor = processor or load_processor(model, max_pixels=NO_RESIZE_MAX_PIXELS)
            model = AutoModelForImageTextToText.from_pretrained(
                model, dtype=resolve_dtype(dtype, self.device)).to(self.device)
        else:
            if processor is None:
                raise ValueError("pass the processor along with an in-memory model")
            self.processor = processor
        self.model = model.eval()
        self.temperature, self.top_p = temperature, top_p
        self.generator_seed = seed
        self._encodings: OrderedDict[str, DialogueEncoding] = OrderedDict()
        self._max_cached = max_cached_dialogues
        tok = self.processor.tokenizer
        self.eos_id = tok.convert_tokens_to_ids("<|im_end|>")
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.eos_id
        # A sampled vision placeholder would be an image without pixels in the next turn's input.
        self.suppress_ids = tok.convert_tokens_to_ids(["<|image_pad|>", "<|video_pad|>"])

    def encoding(self, request: Request) -> DialogueEncoding:
        """The session's encoding, brought up to date with its new messages."""
        enc = self._encodings.pop(request.key, None)
        if enc is None or enc.n_messages > len(request.messages):
            enc = DialogueEncoding(self.processor)
        enc.extend(request.messages, request.images)
        self._encodings[request.key] = enc
        while len(self._encodings) > self._max_cached:
            self._encodings.popitem(last=False)
        return enc

    def _batch(self, encodings: list[DialogueEncoding]) -> dict:
        prompts = [e.prompt_ids() for e in encodings]
        width = max(map(len, prompts))
        # left padding: every row's next token lands in the last column
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        mm = torch.zeros_like(ids)
        for row, (e, p) in enumerate(zip(encodings, prompts)):
            ids[row, width - len(p):] = torch.tensor(p)
            attn[row, width - len(p):] = 1
            mm[row, width - len(p):] = torch.tensor(e.mm_token_type_ids(p))
        batch = {"input_ids": ids, "attention_mask": attn, "mm_token_type_ids": mm}
        vision = [e.vision_inputs() for e in encodings]
        if any(vision):
            batch["pixel_values"] = torch.cat([v["pixel_values"] for v in vision if v])
            batch["image_grid_thw"] = torch.cat([v["image_grid_thw"] for v in vision if v])
        return {k: v.to(self.device) for k, v in batch.items()}

    @torch.inference_mode()
    def generate(self, requests: list[Request], cancel: threading.Event | None = None) -> list[Reply]:
        encodings = [self.encoding(r) for r in requests]
        batch = self._batch(encodings)
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(self.model.dtype)
        sample = self.temperature > 0
        options = {"do_sample": sample, "max_new_tokens": max(r.max_new_tokens for r in requests),
                   "eos_token_id": self.eos_id, "pad_token_id": self.pad_id, "suppress_tokens": self.suppress_ids}
        if sample:
            options |= {"temperature": self.temperature, "top_p": self.top_p, "top_k": 0}
        else:
            options |= {"temperature": None, "top_p": None, "top_k": None}
        if cancel is not None:
            options["stopping_criteria"] = StoppingCriteriaList([_Cancelled(cancel)])
        if self.generator_seed is not None:
            torch.manual_seed(self.generator_seed)
        out = self.model.generate(**batch, **options)
        new = out[:, batch["input_ids"].shape[1]:].tolist()
        replies = []
        for request, enc, ids in zip(requests, encodings, new):
            if self.eos_id in ids:  # drop the padding after an early stop
                ids = ids[: ids.index(self.eos_id) + 1]
            ids = ids[: request.max_new_tokens]
            stopped = ids[-1:] == [self.eos_id]
            text = self.processor.tokenizer.decode(ids, skip_special_tokens=True)
            prompt_len = len(enc.prompt_ids())
            enc.add_assistant(text, ids)
            replies.append(Reply(text, "stop" if stopped else "length", token_ids=ids,
                                 prompt_tokens=prompt_len, completion_tokens=len(ids)))
        return replies

    def warm_up(self) -> None:
        """One short generation on a blank image, so that a node's first question costs what its
        tenth does (lazy imports, the resize path, first-call kernel setup happen here)."""
        from PIL import Image

        from ..driver import run_sessions
        from ..session import Budget, Session

        session = Session([Image.new("RGB", (56, 56))], "warm-up", budget=Budget(max_calls=1, max_new_tokens=2),
                          key="warm-up")
        run_sessions([session], self)

    def forget(self, key: str) -> None:
        self._encodings.pop(key, None)

    def close(self) -> None:
        self._encodings.clear()
        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
