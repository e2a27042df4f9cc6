"""Offline vLLM engine (GPU machines), prefix caching on: each turn re-sends the dialogue and
vLLM reuses the cached prefix, so a turn costs only its new tokens. vLLM is imported only when
this engine is built; request building is plain Python so it is testable anywhere."""

from __future__ import annotations

import gc
import threading

from .. import chat
from ..images import MAX_PIXELS_EVAL, MIN_PIXELS
from ..session import Reply, Request


def build_prompt(request: Request) -> dict:
    """vLLM's multimodal prompt for a request: ChatML text plus its images in order."""
    return {"prompt": chat.render(request.messages, add_generation_prompt=True),
            "multi_modal_data": {"image": [request.images[i] for i in chat.image_indices(request.messages)]}}


def engine_args(model: str, max_images: int = 45, max_pixels: int = MAX_PIXELS_EVAL,
                min_pixels: int = MIN_PIXELS, **overrides) -> dict:
    return {"model": model, "enable_prefix_caching": True, "dtype": "bfloat16",
            "limit_mm_per_prompt": {"image": max_images},
            "mm_processor_kwargs": {"max_pixels": max_pixels, "min_pixels": min_pixels},
            **overrides}


def sampling_args(request: Request, temperature: float, top_p: float, seed: int | None) -> dict:
    greedy = temperature <= 0
    return {"max_tokens": request.max_new_tokens, "temperature": 0.0 if greedy else temperature,
            "top_p": 1.0 if greedy else top_p, "seed": seed}


def replies(outputs) -> list[Reply]:
    """Replies from vLLM ``RequestOutput`` objects (first completion of each)."""
    return [Reply(o.outputs[0].text, "length" if o.outputs[0].finish_reason == "length" else "stop",
                  token_ids=list(o.outputs[0].token_ids), prompt_tokens=len(o.prompt_token_ids),
                  completion_tokens=len(o.outputs[0].token_ids)) for o in outputs]


class VLLMEngine:
    def __init__(self, model: str, temperature: float = 0.75, top_p: float = 0.9,
                 seed: int | None = None, **llm_overrides):
        from vllm import LLM, SamplingParams

        self._sampling_params = SamplingParams
        self.temperature, self.top_p, self.seed = temperature, top_p, seed
        self.llm = LLM(**engine_args(model, **llm_overrides))

    def generate(self, requests: list[Request], cancel: threading.Event | None = None) -> list[Reply]:
        # vLLM's offline generate cannot be interrupted; cancel takes effect between rounds.
        params = [self._sampling_params(**sampling_args(r, self.temperature, self.top_p, self.seed))
                  for r in requests]
        return replies(self.llm.generate([build_prompt(r) for r in requests], params, use_tqdm=False))

    def forget(self, key: str) -> None:
        pass  # stateless between turns (the server / prefix cache keeps what it keeps)

    def close(self) -> None:
        import torch

        del self.llm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
