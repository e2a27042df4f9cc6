"""A tiny, randomly initialised Qwen2.5-VL checkpoint for tests (built offline, no torchvision);
with a larger shape and a tokenizer trained on task text, the embedded model's starting point.

Same architecture, special tokens, chat template and processor files as a real Qwen2.5-VL /
ViLaSR checkpoint, just tiny: by default ~0.2 M parameters, < 1 MB on disk, built in seconds. Its tokenizer is
a byte-level BPE (the Qwen2 pre-tokenizer) trained here on generated text in the vocabulary of the
draw-to-reason protocol, so protocol turns take few tokens and any text round-trips exactly.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path


def _split(text: str) -> tuple[str, ...]:
    return tuple(text.split())


CHAT_TEMPLATE_PATH = Path(__file__).parent / "data" / "qwen2_5_vl_chat_template.jinja"

# Qwen2.5-VL's added tokens in the stock order (ids 151643.. there, BPE size.. here). The two
# tool-call tags are added but not special, as in the stock tokenizer.
QWEN_ADDED_TOKENS = _split(
    "<|endoftext|> <|im_start|> <|im_end|> <|object_ref_start|> <|object_ref_end|> <|box_start|> "
    "<|box_end|> <|quad_start|> <|quad_end|> <|vision_start|> <|vision_end|> <|vision_pad|> "
    "<|image_pad|> <|video_pad|> <tool_call> </tool_call> <|fim_prefix|> <|fim_middle|> "
    "<|fim_suffix|> <|fim_pad|> <|repo_name|> <|file_sep|>"
)
BPE_VOCAB_SIZE = 1000  # byte alphabet (256) + merges, before the added tokens
MIN_PIXELS, MAX_PIXELS = 4 * 28 * 28, 448 * 28 * 28  # 3136, 351232 (evaluation setting)

logger = logging.getLogger(__name__)

_LABELS = _split(
    "chair table sofa bed door window lamp tv refrigerator sink toilet cabinet shelf desk plant box "
    "car person dog cup start goal wall stairs monitor bottle backpack"
) + ("path 1", "red square", "blue circle")
_WORDS = _split(
    "left right above below front behind near far closer farther north south east west forward "
    "backward rotate up down between center corner distance meters size height width length direction "
    "view camera frame image room maze route turn straight object"
)
_SENTENCES = (
    "You are a helpful assistant that solves spatial reasoning problems step by step.",
    "You can use two visualization tools: Object Mapper draws bounding boxes and Path Tracer draws lines.",
    "Coordinates are absolute pixels, with (0, 0) at the top-left corner of the first image.",
    "Analyse the scene first, then use the tools, reflect on each visualization and adjust if needed.",
    "The tool returns a new image with the drawing on it.",
    "Please continue reasoning and critically evaluate the visualization after each tool use.",
    "You can no longer invoke the tools. Now answer the original question in the required format.",
    "Answer with the option's letter from the given choices directly.",
    "Please answer the question using a single word or phrase, e.g. 42 or 3.14.",
    "These are frames of a video, numbered in sequence.",
    "Begin reasoning and evaluate each visualization carefully.",
    "The box around the chair looks correct, so I can measure the distance now.",
    "The line crosses a wall, so this route is blocked and I need to try another one.",
    "Let me mark the objects first and then compare their positions.",
    "I will mark both of them, because it is hard to tell which one is bigger from here.",
    "Wait, this does not match what I expected; let me check the previous image again.",
    "How many chairs are there in the room? What is the size of the table in centimeters?",
    "If I am standing by the door and facing the window, is the bed on my left or on my right?",
    "Measuring from the closest point of each object gives about two meters between them.",
    "The robot should move forward, turn left at the corner, then stop next to the shelf.",
)


def _corpus(n_lines: int = 600) -> list[str]:
    """Text in the protocol's vocabulary; fixed (independent of the model seed)."""
    rng = random.Random(20250609)
    xy = lambda: rng.randrange(0, 640)  # noqa: E731
    lines = list(_SENTENCES) + ["0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14 0.5 -1 A B C D E F"]
    for _ in range(n_lines):
        kind = rng.randrange(6)
        a, b = rng.sample(_LABELS, 2)
        idx = rng.randrange(1, 12)
        if kind == 0:
            ops = [
                {"index": idx, "bbox_2d": [xy(), xy(), xy(), xy()], "label": rng.choice(_LABELS)}
                for _ in range(rng.randrange(1, 4))
            ]
            lines.append(
                f"<think> I should locate the {a} and the {b}. </think>\nAction: Object Mapper\n"
                f"```json\n{json.dumps(ops)}\n```"
            )
        elif kind == 1:
            ops = [{"index": idx, "start_point_2d": [xy(), xy()], "end_point_2d": [xy(), xy()], "label": a}]
            lines.append(
                f"<think> Trace a path from the {a} to the {b}. </think>\nAction: Path Tracer\n"
                f"```json\n{json.dumps(ops)}\n```"
            )
        elif kind == 2:
            ans = rng.choice(["A", "B", "C", "D", str(rng.randrange(100)), f"{rng.random() * 10:.2f}"])
            lines.append(
                f"<think> The {a} is {rng.choice(_WORDS)} the {b}. </think>\nAction: Answer\n"
                f"<answer>{ans}</answer>"
            )
        elif kind == 3:
            lines.append(
                f"The index of the given image is {idx} (width: {xy()}, height: {xy()}). "
                + rng.choice(_SENTENCES)
            )
        elif kind == 4:
            opts = "\n".join(f"{c}. {w}" for c, w in zip("ABCD", rng.sample(_WORDS, 4), strict=True))
            lines.append(
                f"Is the {a} to the {rng.choice(_WORDS)} of the {b}?\n{opts}\n"
                "The index of the given image is 1."
            )
        else:
            lines.append(" ".join(rng.choice(_WORDS + _LABELS) for _ in range(12)) + ".")
    return lines


def build_tokenizer(corpus: list[str] | None = None, vocab_size: int = BPE_VOCAB_SIZE):
    """Train the byte-level BPE (on ``corpus``, default: generated protocol text) and wrap it as a
    `Qwen2Tokenizer` with the Qwen added tokens."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

    bpe = Tokenizer(BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(corpus or _corpus(), trainer)
    model = json.loads(bpe.to_str())["model"]
    vocab, merges = model["vocab"], [tuple(m) for m in model["merges"]]
    added = {
        len(vocab) + i: AddedToken(t, special="tool_call" not in t, normalized=False)
        for i, t in enumerate(QWEN_ADDED_TOKENS)
    }
    return Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        added_tokens_decoder=added,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
        errors="replace",
        split_special_tokens=False,
    )


TEXT_CONFIG = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, mrope_section=[2, 3, 3])
VISION_CONFIG = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, fullatt_block_indexes=[1])


def build_tiny_model(out_dir: str | Path, seed: int = 0, text: dict | None = None, vision: dict | None = None,
                     corpus: list[str] | None = None, vocab_size: int = BPE_VOCAB_SIZE,
                     max_pixels: int = MAX_PIXELS) -> Path:
    """Write a random small Qwen2.5-VL checkpoint (model, tokenizer, processor) to `out_dir`.

    Defaults: the ~0.2 M-parameter test model. ``text`` / ``vision`` override ``TEXT_CONFIG`` /
    ``VISION_CONFIG`` keys (``mrope_section`` must sum to half the text head size; ``rope_theta``,
    default 1e6, is the text model's), ``corpus`` and
    ``vocab_size`` the tokenizer's training text and BPE size, ``max_pixels`` the processor's cap."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from ros_vilasr.core.processor import Qwen2_5_VLImageOnlyProcessor

    out_dir = Path(out_dir)
    text, vision = TEXT_CONFIG | (text or {}), VISION_CONFIG | (vision or {})
    mrope_section = text.pop("mrope_section")
    rope_theta = text.pop("rope_theta", 1e6)  # Qwen2.5-VL's; smaller spreads image positions wider
    tokenizer = build_tokenizer(corpus, vocab_size)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_ADDED_TOKENS}
    eot, im_end = ids["<|endoftext|>"], ids["<|im_end|>"]
    rows = -(-len(tokenizer) // 64) * 64  # padded like Qwen's (151665 -> 152064)
    logger.info("tokenizer: %d tokens (embedding rows %d)", len(tokenizer), rows)

    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=rows,
            **text,
            max_position_embeddings=32768,
            rope_parameters={"rope_type": "default", "rope_theta": rope_theta, "mrope_section": mrope_section},
            bos_token_id=eot,
            eos_token_id=im_end,
            pad_token_id=eot,
        ),
        vision_config=dict(
            **vision,
            out_hidden_size=text["hidden_size"],
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            tokens_per_second=2,
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
        dtype="float32",
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=eot, eos_token_id=[im_end, eot], pad_token_id=eot, do_sample=False
    )
    logger.info("model: %d parameters", sum(p.numel() for p in model.parameters()))

    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=MIN_PIXELS, max_pixels=max_pixels, patch_size=14, temporal_patch_size=2, merge_size=2
    )
    processor = Qwen2_5_VLImageOnlyProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE_PATH.read_text("utf-8"),
    )
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    logger.info("tiny model written to %s", out_dir)
    return out_dir


def teach(model, processor, dialogues, steps: int = 150, lr: float = 3e-3, seed: int = 0) -> list[float]:
    """Fine-tune ``model`` on finished sessions (``Session`` objects) until it reproduces their
    assistant turns: a few seconds for the tiny model. For tests and demos of the real loop; the
    training package does the real thing with TRL. Returns the loss per step."""
    import torch

    from .encoding import encode_dialogue

    torch.manual_seed(seed)
    batches = []
    for session in dialogues:
        enc = encode_dialogue(processor, session.messages, session.images)
        inputs = enc.model_inputs()
        labels = inputs["input_ids"].clone()
        labels[0, torch.tensor(enc.loss_mask) == 0] = -100
        batches.append(inputs | {"labels": labels})
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for step in range(steps):
        batch = batches[step % len(batches)]
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.eval()
    return losses
