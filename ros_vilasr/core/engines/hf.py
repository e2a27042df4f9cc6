"""In-process Qwen2.5-VL through transformers (CPU or GPU; greedy or sampling; batched).

Each session's dialogue is encoded incrementally (``DialogueEncoding``): a turn tokenises only its
new messages and processes only its new images. Generated ids are kept as generated. With
``cache_reuse`` (the default) a dialogue's key/values stay between its turns (``kv_cache``), so a
turn's prefill reads only what is new since the last one — the feedback text and the drawn image —
not the whole dialogue and all its images again. Greedy decoding gives exactly the tokens of a full
re-prefill (tests/test_kv_cache.py); sampling follows transformers' generate step for step.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from transformers import AutoModelForImageTextToText

from .. import chat
from ..encoding import DialogueEncoding
from ..images import NO_RESIZE_MAX_PIXELS
from ..processor import load_processor
from ..session import Reply, Request
from . import kv_cache
from .quantize import quantize


def resolve_device(device: str = "auto") -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def check_device(device: str) -> None:
    """Raise a clear error for a device torch cannot use here (before any weights are read)."""
    device = resolve_device(device)
    kind = torch.device(device)  # a malformed name raises here
    if kind.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (kind.index or 0) >= count:
            raise RuntimeError(f"device {device!r} is not available: torch sees {count} CUDA device(s)")


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


@dataclass
class _Row:
    """One request of a batch: its dialogue's prompt and the part of it the model has not read."""

    encoding: DialogueEncoding
    prompt: list[int]
    start: int  # prompt tokens already in the key/value cache
    new: list[int]  # prompt[start:]
    positions: torch.Tensor  # (3, len(new)) mRoPE positions of the new tokens
    next_position: int  # of the first generated token
    vision: dict  # pixel values and grids of the images among them
    max_new: int
    cancel: threading.Event | None  # this request alone
    generated: list[int] = field(default_factory=list)
    columns: list[int] = field(default_factory=list)  # cache columns of the prompt tokens


class TransformersEngine:
    def __init__(self, model, processor=None, device: str = "auto", dtype: str = "auto",
                 temperature: float = 0.75, top_p: float = 0.9, seed: int | None = None,
                 max_cached_dialogues: int = 1024, cache_reuse: bool = True,
                 max_cached_tokens: int = 131072, quantization: str = "none"):
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
        self.model = quantize(model, quantization, self.device).eval()
        self.temperature, self.top_p = temperature, top_p
        self.generator_seed = seed
        self._encodings: OrderedDict[str, DialogueEncoding] = OrderedDict()
        self._max_cached = max_cached_dialogues
        # ~7.5 GB of bf16 key/values for a 7B Qwen2.5-VL (57 kB a token); kilobytes for the embedded model
        self.cache_reuse = cache_reuse
        self._pasts = kv_cache.PastStore(max_cached_tokens)
        self.timing: dict = {}  # of the last generate call: prefill and decode seconds, token counts
        tok = self.processor.tokenizer
        self.eos_id = tok.convert_tokens_to_ids("<|im_end|>")
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.eos_id
        self.suppress_ids = list(chat.placeholder_ids(tok))

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

    @torch.inference_mode()
    def generate(self, requests: list[Request], cancel: threading.Event | None = None) -> list[Reply]:
        encodings = [self.encoding(r) for r in requests]
        pasts = [self._pasts.take(r.key, e) if self.cache_reuse else None for r, e in zip(requests, encodings)]
        rows = [self._row(e, p, r) for r, e, p in zip(requests, encodings, pasts)]
        if self.generator_seed is not None:
            torch.manual_seed(self.generator_seed)
        start = time.perf_counter()
        cache = kv_cache.stack(pasts, self.model.config, self.device)
        logits, mask = self._prefill(rows, cache)
        fed, first_token = self._decode(rows, cache, logits, mask, cancel)
        self.timing = {"prefill_s": first_token - start, "decode_s": time.perf_counter() - first_token,
                       "prefill_tokens": sum(len(r.new) for r in rows), "decode_steps": fed}
        return [self._reply(i, row, request, cache, fed) for i, (row, request) in enumerate(zip(rows, requests))]

    def _row(self, encoding: DialogueEncoding, past: kv_cache.Past | None, request: Request) -> _Row:
        prompt = encoding.prompt_ids()
        start, images, offset = (past.length, past.images, past.next_position) if past else (0, 0, 0)
        new = prompt[start:]
        vision = encoding.vision_inputs(start=images, device=self.device, reuse=True)  # fed this call
        # mRoPE positions are shift-invariant: those of the new tokens alone, moved past the old ones
        positions, _ = self.model.model.get_rope_index(
            torch.tensor([new]), torch.tensor([encoding.mm_token_type_ids(new)]), vision.get("image_grid_thw"))
        positions = positions[:, 0] + offset
        return _Row(encoding, prompt, start, new, positions, int(positions.max()) + 1, vision,
                    max(request.max_new_tokens, 1), request.cancel)

    def _prefill(self, rows: list[_Row], cache) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward pass over every row's new tokens after its past. Rows are left-padded (past
        and new tokens each to the longest) and the padding masked out."""
        past_width, width = max(r.start for r in rows), max(len(r.new) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), past_width + width), dtype=torch.long)
        positions = torch.zeros((3, len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            n = len(row.new)
            ids[i, width - n:] = torch.tensor(row.new)
            mask[i, past_width - row.start: past_width] = 1
            mask[i, past_width + width - n:] = 1
            positions[:, i, width - n:] = row.positions
            end = past_width + width
            row.columns = [*range(past_width - row.start, past_width), *range(end - n, end)]
        inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
        vision = [r.vision for r in rows if r.vision]
        if vision:
            pixels = [v["pixel_values"] for v in vision]
            inputs["pixel_values"] = (pixels[0] if len(pixels) == 1 else torch.cat(pixels)).to(self.model.dtype)
            inputs["image_grid_thw"] = torch.cat([v["image_grid_thw"] for v in vision])
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        out = self.model(**inputs, past_key_values=cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1].float(), inputs["attention_mask"]

    def _decode(self, rows: list[_Row], cache, logits, mask, cancel) -> tuple[int, float]:
        """Sample every row's reply (a stopped row is fed padding, as generate does) until all have
        stopped (a row whose own cancel is set stops at once) or ``cancel`` is set. Returns how
        many sampled tokens were fed back, and when the first token was known (prefill's end)."""
        done = [False] * len(rows)
        fed = 0
        while True:
            tokens = self._pick(logits).tolist()  # waits for the device
            if fed == 0:
                first_token = time.perf_counter()
            for i, row in enumerate(rows):
                done[i] = done[i] or (row.cancel is not None and row.cancel.is_set())
                if done[i]:
                    tokens[i] = self.pad_id
                    continue
                row.generated.append(tokens[i])
                done[i] = tokens[i] == self.eos_id or len(row.generated) >= row.max_new
            if all(done) or (cancel is not None and cancel.is_set()):
                return fed, first_token
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
            positions = torch.tensor([r.next_position + fed for r in rows], device=self.device)
            out = self.model(input_ids=torch.tensor(tokens, device=self.device)[:, None], attention_mask=mask,
                             position_ids=positions.view(1, -1, 1).expand(3, -1, 1), past_key_values=cache,
                             use_cache=True)
            logits = out.logits[:, -1].float()
            fed += 1

    def _pick(self, logits: torch.Tensor) -> torch.Tensor:
        """Each row's next token, chosen as transformers' generate chooses it (suppressed tokens,
        then temperature, top-p and a multinomial draw), so seeded runs sample alike."""
        logits[:, self.suppress_ids] = -float("inf")
        if self.temperature <= 0:
            return logits.argmax(dim=-1)
        logits = logits / self.temperature
        if self.top_p < 1.0:
            ordered, order = torch.sort(logits, descending=False)
            drop = ordered.softmax(dim=-1).cumsum(dim=-1) <= 1 - self.top_p
            drop[:, -1] = False
            logits = logits.masked_fill(drop.scatter(1, order, drop), -float("inf"))
        return torch.multinomial(logits.softmax(dim=-1), num_samples=1).squeeze(1)

    def _reply(self, index: int, row: _Row, request: Request, cache, fed: int) -> Reply:
        if row.cancel is not None and row.cancel.is_set():
            return Reply("", error="cancelled")  # not a turn: the dialogue stays as it was
        ids = row.generated[: request.max_new_tokens]
        if self.cache_reuse:  # keep what the model has read: the prompt and every token but the last
            width = cache.get_seq_length()
            length = len(row.prompt) + max(len(ids) - 1, 0)
            columns = row.columns + list(range(width - fed, width))
            self._pasts.put(request.key, kv_cache.Past(
                kv_cache.row_layers(cache, index, columns[:length]), length, len(row.encoding.pixel_values),
                row.next_position + length - len(row.prompt), row.encoding))
        text = self.processor.tokenizer.decode(ids, skip_special_tokens=True)
        row.encoding.add_assistant(text, ids)
        return Reply(text, "stop" if ids[-1:] == [self.eos_id] else "length", token_ids=ids,
                     prompt_tokens=len(row.prompt), completion_tokens=len(ids))

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
        self._pasts.drop(key)

    def close(self) -> None:
        self._encodings.clear()
        self._pasts.clear()
        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
