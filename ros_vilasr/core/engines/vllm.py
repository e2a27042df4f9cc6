"""Offline vLLM engine (GPU machines), prefix caching on: each turn re-sends the dialogue and
vLLM reuses the cached prefix, so a turn costs only its new tokens. Requests go through vLLM's
engine step by step, so cancel aborts them inside vLLM at once; vision placeholder tokens are
never sampled (a sampled one would be an image without pixels in the next turn). vLLM is imported
only when this engine is built; request building is plain Python so it is testable anywhere."""

from __future__ import annotations

import gc
import itertools
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


def sampling_args(request: Request, temperature: float, top_p: float, seed: int | None,
                  suppress: tuple[int, ...] = ()) -> dict:
    """SamplingParams keywords; ``suppress``: token ids never to sample (vision placeholders)."""
    greedy = temperature <= 0
    args = {"max_tokens": request.max_new_tokens, "temperature": 0.0 if greedy else temperature,
            "top_p": 1.0 if greedy else top_p, "seed": seed}
    if suppress:
        args["logit_bias"] = {token: -100.0 for token in suppress}
    return args


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
        self.suppress = chat.placeholder_ids(self.llm.get_tokenizer())
        self._ids = itertools.count()

    def generate(self, requests: list[Request], cancel: threading.Event | None = None) -> list[Reply]:
        """Step vLLM's engine until every request finished; on cancel, abort them in vLLM and
        return at once (cancelled replies). A request whose own cancel is set is aborted alone."""
        engine = self.llm.llm_engine
        ids = [f"{r.key}#{next(self._ids)}" for r in requests]
        for request_id, request in zip(ids, requests):
            params = self._sampling_params(**sampling_args(request, self.temperature, self.top_p, self.seed,
                                                           self.suppress))
            engine.add_request(request_id, build_prompt(request), params)
        finished, dropped = {}, set()
        try:
            while len(finished) + len(dropped) < len(ids):
                if cancel is not None and cancel.is_set():
                    break
                if own := [i for i, r in zip(ids, requests) if r.cancel is not None and r.cancel.is_set()
                           and i not in finished and i not in dropped]:
                    engine.abort_request(own)
                    dropped.update(own)
                    continue
                finished |= {o.request_id: o for o in engine.step() if o.finished}
        finally:
            if unfinished := [i for i in ids if i not in finished and i not in dropped]:
                engine.abort_request(unfinished)  # cancelled, or an exception: nothing left running
        if len(finished) + len(dropped) < len(ids):
            return [Reply("", error="cancelled") for _ in requests]
        done = dict(zip([i for i in ids if i in finished], replies([finished[i] for i in ids if i in finished])))
        return [done.get(i, Reply("", error="cancelled")) for i in ids]

    def forget(self, key: str) -> None:
        pass  # stateless between turns (the server / prefix cache keeps what it keeps)

    def close(self) -> None:
        import torch

        del self.llm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
