"""Key/value cache reuse across turns in the transformers engine: greedy decoding with the cache
gives exactly the tokens of a full re-prefill by transformers' own ``generate`` (the reference,
which computes every position and image feature from the whole dialogue), for one dialogue over
many turns and images and for a batch of dialogues at different turns; memory stays bounded."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from benchmarks.gpu import DrawingDialogue
from ros_vilasr.core.driver import run_sessions
from ros_vilasr.core.encoding import encode_dialogue
from ros_vilasr.core.engines.hf import TransformersEngine
from ros_vilasr.core.images import NO_RESIZE_MAX_PIXELS
from ros_vilasr.core.processor import load_processor
from ros_vilasr.core.session import Budget, Session
from ros_vilasr.core.tiny_model import build_tiny_model

MAX_NEW = 12


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def model(tiny):
    """The tiny model with sharpened attention: at its initial scale attention is nearly uniform,
    so wrong positions or wrong cached keys would hardly change its tokens; here they do."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny, dtype=torch.float32).eval()
    with torch.no_grad():
        for layer in model.model.language_model.layers:
            for proj, scale in (("q_proj", 12), ("k_proj", 12), ("v_proj", 4), ("o_proj", 4)):
                getattr(layer.self_attn, proj).weight.mul_(scale)
    return model


@pytest.fixture(scope="module")
def processor(tiny):
    return load_processor(tiny, max_pixels=NO_RESIZE_MAX_PIXELS)


def engine(model, processor, **options):
    return TransformersEngine(model, processor, temperature=0.0, **options)


class Dialogue(DrawingDialogue):
    """The benchmark's scripted drawing dialogue (a new drawn image every turn), plus its reference."""

    def __init__(self, key: str, seed: int, sizes=((448, 336), (336, 448))):
        super().__init__(key, seed, sizes, max_new_tokens=MAX_NEW)

    def reference(self, model, processor) -> list[int]:
        """The next turn's greedy tokens by a full re-prefill through transformers' generate."""
        enc = encode_dialogue(processor, self.messages, self.images, self.generated)
        ids = torch.tensor([enc.prompt_ids()])
        eos = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
        out = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids),
            mm_token_type_ids=torch.tensor([enc.mm_token_type_ids(enc.prompt_ids())]),
            **enc.vision_inputs(), do_sample=False, max_new_tokens=MAX_NEW, eos_token_id=eos, pad_token_id=eos,
            suppress_tokens=processor.tokenizer.convert_tokens_to_ids(["<|image_pad|>", "<|video_pad|>"]))
        new = out[0, ids.shape[1]:].tolist()
        return new[: new.index(eos) + 1] if eos in new else new


def turns_match_a_full_reprefill(tested, dialogue, model, processor, turns: int) -> list:
    """Drive ``dialogue`` for ``turns`` turns through ``tested``, each reply checked against the
    reference; the replies."""
    replies = []
    for _ in range(turns):
        expected = dialogue.reference(model, processor)
        (reply,) = tested.generate([dialogue.request()])
        assert reply.token_ids == expected
        replies.append(reply)
        dialogue.add(reply)
    return replies


def test_one_dialogue_over_eight_turns_matches_a_full_reprefill(model, processor):
    cached = engine(model, processor)
    dialogue = Dialogue("d", seed=1)
    prompt_lengths = [r.prompt_tokens for r in turns_match_a_full_reprefill(cached, dialogue, model, processor, 8)]
    assert len(dialogue.images) == 10 and prompt_lengths == sorted(prompt_lengths)
    # what the cache holds is the dialogue so far, but for the last sampled token
    past = cached._pasts.take("d", cached._encodings["d"])
    assert past.length == prompt_lengths[-1] + len(dialogue.generated[-1]) - 1 and past.images == 9


def test_a_batch_of_dialogues_at_different_turns_matches_a_full_reprefill(model, processor):
    """Dialogues join the batch at different rounds, so each round mixes pasts of different
    lengths (and one with none); every reply equals its dialogue's own full re-prefill."""
    cached = engine(model, processor)
    dialogues = [Dialogue(f"d{i}", seed=10 + i, sizes=[(448, 336), (280, 560), (560, 280)][: i + 1])
                 for i in range(3)]
    for round_ in range(6):
        active = [d for i, d in enumerate(dialogues) if round_ >= 2 * i]
        expected = [d.reference(model, processor) for d in active]
        replies = cached.generate([d.request() for d in active])
        assert [r.token_ids for r in replies] == expected
        for d, r in zip(active, replies):
            d.add(r)


def test_an_evicted_or_stale_past_falls_back_to_a_full_prefill(model, processor):
    small = engine(model, processor, max_cached_tokens=1)  # every past is evicted at once
    turns_match_a_full_reprefill(small, Dialogue("d", seed=3), model, processor, 3)
    assert small._pasts.evictions == 3 and small._pasts.tokens == 0
    # a dialogue rewritten under the same key (shorter than the encoding) is encoded afresh
    cached = engine(model, processor)
    first = Dialogue("same", seed=4)
    (reply,) = cached.generate([first.request()])
    first.add(reply)
    cached.generate([first.request()])
    other = Dialogue("same", seed=5)
    (reply,) = cached.generate([other.request()])
    assert reply.token_ids == other.reference(model, processor)


def test_finished_and_cancelled_sessions_free_their_cache(model, processor):
    import threading

    cached = engine(model, processor)
    sessions = [Session([Image.new("RGB", (56, 56), "white")], f"q{i}", budget=Budget(max_calls=2, max_new_tokens=4),
                        key=f"s{i}") for i in range(2)]
    run_sessions(sessions, cached)
    assert all(s.done for s in sessions) and cached._pasts.tokens == 0 and not cached._encodings
    cancel = threading.Event()
    cancel.set()
    session = Session([Image.new("RGB", (56, 56), "white")], "q", budget=Budget(max_new_tokens=4), key="c")
    cached.generate([session.request()])  # a turn that left a past behind
    assert cached._pasts.tokens > 0
    run_sessions([session], cached, cancel=cancel)
    assert session.finish_reason == "cancelled" and cached._pasts.tokens == 0


def test_without_cache_reuse_nothing_is_kept(model, processor):
    plain = engine(model, processor, cache_reuse=False)
    turns_match_a_full_reprefill(plain, Dialogue("d", seed=6), model, processor, 2)
    assert plain._pasts.tokens == 0


def test_serving_benchmark_prefills_only_the_new_turn_with_reuse(tmp_path):
    """benchmarks/gpu.py at toy scale (the shipped model, CPU): with reuse a turn after the first
    prefills only its new tokens (the drawn image and feedback), without reuse the whole dialogue."""
    from benchmarks import gpu

    result = gpu.main(["--shape", "embedded", "--sessions", "1", "2", "--turns", "3", "--max-new-tokens", "4",
                       "--out", str(tmp_path)])
    runs = {(r["sessions"], r["cache_reuse"]): r["turns"] for r in result["runs"]}
    for sessions in (1, 2):
        reuse, full = runs[(sessions, True)], runs[(sessions, False)]
        assert reuse[0]["prefill_tokens"] == full[0]["prefill_tokens"]  # the first turn reads everything
        for a, b in zip(reuse[1:], full[1:]):
            assert b["prefill_tokens"] == b["prompt_tokens"]  # all sessions, all of the dialogue
            assert a["prefill_tokens"] < b["prefill_tokens"] / 2 and a["prompt_tokens"] == b["prompt_tokens"]
    assert (tmp_path / "serving_embedded_cpu.md").read_text().count("| 3 |") == 2
