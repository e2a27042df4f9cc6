"""Serving benchmark: the transformers engine over a 10-turn drawing dialogue, with and without
key/value cache reuse, for several concurrent sessions batched together.

Per turn: prefill latency (until the first token is known), decode latency per token, decode
tokens/s over the batch, peak GPU memory; each beside the decode floor of a batch step (weight
bytes ÷ memory bandwidth: a step must read every weight once). Both modes run in the same process,
side by side.

Shapes: ``7b`` — a Qwen2.5-VL-7B-shaped model (28 layers, hidden 3584, 4 KV heads, 32-block
vision tower) with random bf16 weights, built on the GPU (no download; the tiny tokenizer and
processor feed it); ``embedded`` — the shipped model, for CPUs. Each turn the model writes a fixed
number of tokens (never stopping early) and the user turn adds a drawn image, as the node's loop does.

    python benchmarks/gpu.py                      # 7b on CUDA (1, 8, 32 sessions), embedded on CPU (1, 4)
    python benchmarks/gpu.py --shape embedded --sessions 1 4 --turns 10
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.machine import describe, markdown, write_results  # noqa: E402
from ros_vilasr.core.engines.hf import TransformersEngine  # noqa: E402
from ros_vilasr.core.images import NO_RESIZE_MAX_PIXELS, prepare_image  # noqa: E402
from ros_vilasr.core.models import EMBEDDED_DIR  # noqa: E402
from ros_vilasr.core.processor import load_processor  # noqa: E402
from ros_vilasr.core.protocol import Box  # noqa: E402
from ros_vilasr.core.render import Drawing, draw  # noqa: E402
from ros_vilasr.core.session import Request  # noqa: E402
from ros_vilasr.core.tiny_model import build_tiny_model  # noqa: E402

RESULTS = Path(__file__).parent / "results"
QWEN25_VL_7B = {  # Qwen/Qwen2.5-VL-7B-Instruct config.json
    "text": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                 num_key_value_heads=4, vocab_size=152064, mrope_section=[16, 24, 24]),
    "vision": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                   fullatt_block_indexes=[7, 15, 23, 31]),
}
# On a GPU, PyTorch's attention (cuDNN backend) builds a plan the first time it meets a sequence
# length: measured on an H200 (results/serving_7b_cuda_shapes.md), decoding ran at ~60 ms/token
# over unseen lengths and ~20 ms over seen ones, whichever cache mode ran first. So each mode is
# timed after an untimed pass over the same shapes (a long-running node's steady state).
SHAPES = "timed after an untimed pass over the same dialogues' shapes in both modes"
BANDWIDTH_TB_S = {"H200": 4.8, "H100 NVL": 3.9, "H100 PCIe": 2.0, "H100": 3.35, "A100-SXM4-80GB": 2.04,
                  "A100": 1.56, "L40S": 0.864, "Orin": 0.205}


class DrawingDialogue:
    """A dialogue driven turn by turn without parsing the model's text: each model turn is followed
    by a user turn showing a new drawn image (a box on an earlier image), as the loop's feedback does."""

    def __init__(self, key: str, seed: int, sizes=((448, 336), (336, 448)), max_new_tokens: int = 16):
        self.key, self.rng, self.max_new_tokens = key, np.random.default_rng(seed), max_new_tokens
        self.images = [prepare_image(Image.fromarray(self.rng.integers(0, 256, (h, w, 3), dtype=np.uint8))).image
                       for w, h in sizes]
        parts = [{"type": "image", "index": i} for i in range(len(self.images))]
        question = {"type": "text", "text": f"Where is the chair? ({key})"}
        self.messages = [{"role": "system", "content": "You reason about space by drawing."},
                         {"role": "user", "content": [*parts, question]}]
        self.generated: list[list[int]] = []

    def request(self) -> Request:
        return Request(self.key, self.messages, self.images, self.max_new_tokens)

    def add(self, reply) -> None:
        self.generated.append(reply.token_ids)
        self.messages.append({"role": "assistant", "content": reply.text})
        k = int(self.rng.integers(len(self.images)))
        x, y = (int(v) for v in self.rng.integers(0, 200, 2))
        self.images.append(draw(self.images[k], Drawing(boxes=(Box(k + 1, "chair", (x, y, x + 60, y + 40)),))))
        self.messages.append({"role": "user", "content": [
            {"type": "image", "index": len(self.images) - 1},
            {"type": "text", "text": f"The index of the given image is {len(self.images)}. Continue."}]})


def build_engine(shape: str, device: str, tmp: str, cache_reuse: bool) -> TransformersEngine:
    if shape == "embedded":
        return TransformersEngine(str(EMBEDDED_DIR), device=device, dtype="float32", temperature=0.0,
                                  cache_reuse=cache_reuse)
    from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration

    tiny = build_tiny_model(tmp)  # tokenizer, processor and special-token ids
    config = AutoConfig.from_pretrained(tiny)
    text = dict(QWEN25_VL_7B["text"])
    config.text_config.rope_parameters["mrope_section"] = text.pop("mrope_section")
    for key, value in text.items():
        setattr(config.text_config, key, value)
    config.text_config.layer_types = ["full_attention"] * text["num_hidden_layers"]  # one per layer
    for key, value in QWEN25_VL_7B["vision"].items():
        setattr(config.vision_config, key, value)
    config.vision_config.out_hidden_size = config.text_config.hidden_size
    config.tie_word_embeddings = False
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    return TransformersEngine(model, load_processor(tiny, max_pixels=NO_RESIZE_MAX_PIXELS), device=device,
                              temperature=0.0, cache_reuse=cache_reuse)


def run(engine: TransformersEngine, sessions: int, turns: int, max_new_tokens: int) -> list[dict]:
    engine.eos_id = -1  # fixed-length turns: a random model would stop at random
    dialogues = [DrawingDialogue(f"s{i}-{time.monotonic_ns()}", seed=i, max_new_tokens=max_new_tokens)
                 for i in range(sessions)]
    rows = []
    for turn in range(1, turns + 1):
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        replies = engine.generate([d.request() for d in dialogues])
        t = engine.timing
        rows.append({"turn": turn, "prompt_tokens": sum(r.prompt_tokens for r in replies),
                     "prefill_tokens": t["prefill_tokens"],
                     "prefill_ms": 1e3 * t["prefill_s"],
                     "decode_ms_per_token": 1e3 * t["decode_s"] / max(t["decode_steps"], 1),
                     "decode_tokens_per_s": sessions * t["decode_steps"] / t["decode_s"] if t["decode_s"] else 0.0,
                     "gpu_peak_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None})
        for d, r in zip(dialogues, replies):
            d.add(r)
    for d in dialogues:
        engine.forget(d.key)
    return rows


def decode_floor_ms(engine: TransformersEngine) -> tuple[float | None, str]:
    weight_bytes = sum(p.numel() * p.element_size() for p in engine.model.parameters())
    if not torch.cuda.is_available():
        return None, f"weights {weight_bytes / 2**30:.2f} GiB; no bandwidth figure for CPUs"
    name = torch.cuda.get_device_name()
    bandwidth = next((bw for key, bw in BANDWIDTH_TB_S.items() if key in name), None)
    if bandwidth is None:
        return None, f"weights {weight_bytes / 2**30:.2f} GiB; bandwidth of {name} unknown"
    return 1e3 * weight_bytes / (bandwidth * 1e12), (
        f"weights {weight_bytes / 2**30:.2f} GiB ÷ {bandwidth} TB/s ({name}, datasheet)")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cuda = torch.cuda.is_available()
    parser.add_argument("--shape", choices=["7b", "embedded"], default="7b" if cuda else "embedded")
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 8, 32] if cuda else [1, 4])
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=32 if cuda else 16)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    device = "cuda" if cuda else "cpu"
    result = {"machine": describe(), "device": torch.cuda.get_device_name() if cuda else "cpu", "shape": args.shape,
              "turns": args.turns, "max_new_tokens": args.max_new_tokens, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        engine = build_engine(args.shape, device, tmp, cache_reuse=True)
        floor, floor_note = decode_floor_ms(engine)
        result |= {"decode_floor_ms": floor, "decode_floor": floor_note,
                   "parameters": sum(p.numel() for p in engine.model.parameters())}
        run(engine, 1, 2, 2)  # warm-up: kernels, allocator
        for sessions in args.sessions:
            for reuse in (True, False):  # untimed pass over the same shapes: see SHAPES
                engine.cache_reuse = reuse
                run(engine, sessions, args.turns, args.max_new_tokens)
            for reuse in (True, False):
                engine.cache_reuse = reuse
                result["runs"].append({"sessions": sessions, "cache_reuse": reuse,
                                       "turns": run(engine, sessions, args.turns, args.max_new_tokens)})
    write_results(args.out, f"serving_{args.shape}_{'cuda' if cuda else 'cpu'}", result, report(result))
    return result


def report(r: dict) -> str:
    lines = [f"# Serving: {r['shape']} model on {r['device']}", "", markdown(r["machine"]), "",
             f"{r['parameters'] / 1e6:.1f} M parameters. A {r['turns']}-turn drawing dialogue per session (two "
             f"input images, one drawn image added per turn), {r['max_new_tokens']} tokens written per turn; "
             "concurrent sessions batched in one engine call per turn. Cache reuse on and off in the same run, "
             f"{SHAPES}. "
             f"Decode floor per batch step: {r['decode_floor']}"
             + (f" = {r['decode_floor_ms']:.2f} ms." if r["decode_floor_ms"] else "."), ""]
    for run_ in r["runs"]:
        if not run_["cache_reuse"]:
            continue
        plain = next(x for x in r["runs"] if x["sessions"] == run_["sessions"] and not x["cache_reuse"])
        lines += [f"## {run_['sessions']} session(s)", "",
                  "| turn | dialogue tokens (all sessions) | prefill tokens (reuse / full) | prefill ms (reuse) | "
                  "prefill ms (full) | "
                  "decode ms/token (reuse / full) | decode tokens/s (reuse) | GPU peak GiB (reuse / full) |",
                  "|---|---|---|---|---|---|---|---|"]
        for a, b in zip(run_["turns"], plain["turns"]):
            gpu = (f"{a['gpu_peak_gib']:.1f} / {b['gpu_peak_gib']:.1f}" if a["gpu_peak_gib"] is not None else "–")
            lines.append(f"| {a['turn']} | {a['prompt_tokens']} | {a['prefill_tokens']} / {b['prefill_tokens']} | "
                         f"{a['prefill_ms']:.1f} | {b['prefill_ms']:.1f} | {a['decode_ms_per_token']:.2f} / "
                         f"{b['decode_ms_per_token']:.2f} | {a['decode_tokens_per_s']:.0f} | {gpu} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
