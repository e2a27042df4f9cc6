"""Can the embedded architecture read where something is in an image? A diagnostic for issue 13.

A randomly initialised model of the shipped embedded model's shape (its config, tokenizer and
processor) learns one task: a grey 224x224 image with a red square at a random place, the question
"Where is the red square?", the answer its centre x as three digits. Drawing boxes needs exactly
this. The same run trains it once per ``rope_theta`` of the text model, side by side. With a head
size of 32 and ``mrope_section`` [4, 6, 6], Qwen2.5-VL's 1e6 gives the image's width axis only
rotary frequencies below 2e-4 rad per position, so the model cannot tell columns apart; a small
theta spreads them out (the width axis gets the lowest of the 16 frequencies, theta^-0.625 to
theta^-0.94 rad per column: at 20 still under 0.16, at 1.5 about 0.7). The learning curves show
it: loss per answer digit (hundreds, tens, units) against the loss of the answer distribution alone
(what a model that does not look scores).

    python benchmarks/position_probe.py [--steps 800] [--thetas 1e6 20 3e4@1,2,13] [--vision-depths 2 4 --stem NAME]

A theta may carry its own ``mrope_section`` (``THETA@T,H,W``, frequencies per axis, fastest first).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.machine import describe, markdown, write_results  # noqa: E402
from ros_vilasr.core.encoding import encode_dialogue  # noqa: E402
from ros_vilasr.core.models import EMBEDDED_DIR  # noqa: E402
from ros_vilasr.core.processor import load_processor  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SIZE, HALF = 224, 14  # image side; half the square's side
LOW, HIGH = 20, 204  # range of the square's centre
BATCH, LR = 8, 1e-3


def example(processor, rng: random.Random):
    image = Image.new("RGB", (SIZE, SIZE), (128, 128, 128))
    x, y = rng.randint(LOW, HIGH), rng.randint(LOW, HIGH)
    ImageDraw.Draw(image).rectangle([x - HALF, y - HALF, x + HALF, y + HALF], fill=(220, 30, 30))
    messages = [{"role": "user", "content": [{"type": "image", "index": 0},
                                             {"type": "text", "text": "Where is the red square?"}]},
                {"role": "assistant", "content": f"x = {x:03d}"}]
    return encode_dialogue(processor, messages, [image])


def digit_losses(model, encoding) -> torch.Tensor:
    """Cross-entropy at the answer's three digits (the supervised tokens before <|im_end|>)."""
    out = model(**encoding.model_inputs())
    targets = torch.tensor(encoding.input_ids[1:])
    logp = torch.log_softmax(out.logits[0, :-1], -1)
    nll = -logp[torch.arange(len(targets)), targets]
    supervised = [i for i, m in enumerate(encoding.loss_mask[1:]) if m]
    return nll[supervised[-4:-1]]  # "x", " =", " ", three digits, <|im_end|>


def marginal_nll() -> list[float]:
    """Entropy of each answer digit under the uniform centre: the floor without looking."""
    xs = [f"{x:03d}" for x in range(LOW, HIGH + 1)]
    out = []
    for k in range(3):
        counts = np.unique([s[k] for s in xs], return_counts=True)[1] / len(xs)
        out.append(float(-(counts * np.log(counts)).sum()))
    return out


def rope_variant(text: str) -> tuple[float, list[int]]:
    """``"20"`` -> (20.0, the shipped ``mrope_section``); ``"1e6@0,2,14"`` -> (1e6, [0, 2, 14])."""
    theta, _, section = text.partition("@")
    if not section:
        return float(theta), json.loads((EMBEDDED_DIR / "config.json").read_text())["text_config"][
            "rope_parameters"]["mrope_section"]
    return float(theta), [int(n) for n in section.split(",")]


def variant_name(theta: float, section: list[int]) -> str:
    return f"{theta:g} @ {section}"


def random_model(theta: float, seed: int, vision_depth: int | None = None, mrope_section: list[int] | None = None):
    """A randomly initialised model of the shipped embedded model's shape with text ``rope_theta``
    ``theta`` (and ``vision_depth`` vision blocks, ``mrope_section``), and its AdamW optimiser."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    config = Qwen2_5_VLConfig.from_pretrained(EMBEDDED_DIR)
    config.text_config.rope_parameters["rope_theta"] = theta
    if mrope_section is not None:
        config.text_config.rope_parameters["mrope_section"] = mrope_section
    if vision_depth is not None:  # full attention in every second block, as the shipped tower's last
        config.vision_config.depth = vision_depth
        config.vision_config.fullatt_block_indexes = list(range(1, vision_depth, 2))
    model = Qwen2_5_VLForConditionalGeneration(config)
    return model, torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)


def descend(model, optimizer, loss: torch.Tensor) -> None:
    """One optimiser step on ``loss`` (gradients clipped to norm 1)."""
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad()


def train(theta: float, steps: int, seed: int, processor, vision_depth: int | None = None,
          mrope_section: list[int] | None = None) -> list[list[float]]:
    model, optimizer = random_model(theta, seed, vision_depth, mrope_section)
    label = (f"theta {variant_name(theta, model.config.text_config.rope_parameters['mrope_section'])} "
             f"vision depth {model.config.vision_config.depth}")
    rng = random.Random(seed)
    curve, start = [], time.monotonic()
    for step in range(steps):
        losses = torch.stack([digit_losses(model, example(processor, rng)) for _ in range(BATCH)])
        descend(model, optimizer, losses.mean())
        curve.append(losses.mean(0).tolist())
        if (step + 1) % 50 == 0:
            print(f"{label} step {step + 1}: "
                  f"digit loss {np.round(np.mean(curve[-50:], 0), 3)} "
                  f"({time.monotonic() - start:.0f} s)", flush=True)
    return curve


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--thetas", type=rope_variant, nargs="+", default=["1e6", "20", "4", "1.5"],
                        help="text rope_theta values, each optionally THETA@T,H,W with its mrope_section")
    parser.add_argument("--vision-depths", type=int, nargs="+", help="vision tower depths to compare "
                        "(default: the shipped model's only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stem", default="position_probe", help="result file name")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    processor = load_processor(EMBEDDED_DIR, max_pixels=SIZE * SIZE)
    window = max(1, min(50, args.steps // 4))
    result = {"machine": describe(), "steps": args.steps, "batch": BATCH, "learning_rate": LR, "seed": args.seed,
              "marginal_nll": marginal_nll(), "window": window, "runs": {}}
    for theta, section in args.thetas:
        for depth in args.vision_depths or [None]:
            curve = train(theta, args.steps, args.seed, processor, depth, section)
            name = variant_name(theta, section) + ("" if depth is None else f", vision depth {depth}")
            result["runs"][name] = {"curve": curve, "final": np.mean(curve[-window:], 0).tolist()}
    write_results(args.out, args.stem, result, report(result, args.stem))
    plot(result, args.out / f"{args.stem}.png")
    return result


def report(r: dict, stem: str = "position_probe") -> str:
    rows = [f"| {theta} | " + " | ".join(f"{v:.3f}" for v in run["final"]) + " |" for theta, run in r["runs"].items()]
    floor = " | ".join(f"{v:.3f}" for v in r["marginal_nll"])
    sections = " @ `mrope_section`" if any("@" in name for name in r["runs"]) else ""  # older results lack them
    depth = ", vision depth" if any("depth" in name for name in r["runs"]) else ""
    return "\n".join([
        "# Position probe: can the embedded architecture read where a square is?", "", markdown(r["machine"]), "",
        f"A random model of the embedded model's shape, trained {r['steps']} steps (batch {r['batch']}, AdamW lr "
        f"{r['learning_rate']:g}, seed {r['seed']}) per text `rope_theta`{sections}, in one run: answer the red "
        f"square's centre x on a 224×224 image. Loss per answer digit over the last {r['window']} steps (nats), "
        "beside the loss of a model that does not look (the digits' own distribution).", "",
        f"| rope_theta{sections.replace('`', '')}{depth} | hundreds | tens | units |",
        "|---|---|---|---|", *rows,
        f"| not looking | {floor} |", "",
        "Below the not-looking row, the model reads the square's position from the image.", "",
        f"![learning curves]({stem}.png)", ""])


def plot(r: dict, path: Path) -> None:
    floors = r["marginal_nll"]
    plot_curves(r, path, [f"{name} digit" for name in ("hundreds", "tens", "units")], floors, "not looking",
                "loss (nats)", ylims=[(0, max(3.0, math.ceil(f))) for f in floors])


def plot_curves(r: dict, path: Path, titles: list[str], references: list[float], reference_label: str,
                ylabel: str, ylims: list[tuple[float, float]] | None = None, run_label: str = "rope_theta {}") -> None:
    """One panel per column of the runs' curves (``r["runs"][name]["curve"]``, None = no value that
    step): each run's mean over ``r["window"]`` steps (legend: ``run_label`` of its name) beside a
    reference line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(titles), figsize=(12, 3.5), sharex=True)
    w = r["window"]
    for k, (ax, title) in enumerate(zip(axes, titles)):
        for theta, run in r["runs"].items():
            values = np.array(run["curve"], float)[:, k]
            smooth = [np.nanmean(values[i - w + 1:i + 1]) for i in range(w - 1, len(values))]
            ax.plot(np.arange(w, len(values) + 1), smooth, label=run_label.format(theta))
        ax.axhline(references[k], color="gray", linestyle="--", label=reference_label)
        ax.set_title(title)
        ax.set_xlabel("step")
        if ylims:
            ax.set_ylim(*ylims[k])
    axes[0].set_ylabel(ylabel)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
