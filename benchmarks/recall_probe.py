"""Can the embedded architecture recall a word from further back than a few dozen tokens? A
diagnostic for issue 13.

The embedded model answers a "which object is closest to the plant?" question with the floor
count ("5"), and its first thought names another object than the question's: it does not read
the question back. A randomly initialised text model of the shipped shape learns one task, side
by side per text ``rope_theta``: the question names one of the scene catalogue's twelve objects,
then come ``n`` filler sentences each naming a random object (distractors), then "It asked about
the" and the answer, the question's object. Reading it back means attending to one word by what
it is, at a distance that varies from example to example. Rotary attention scores rotate by
(distance x frequency) in every channel; with ``rope_theta`` 20 and a head size of 32 the slowest
channel turns 0.06 rad per position, so past ~50 positions no channel keeps a content match
steady, while 1e6 leaves the slowest channels nearly still. Loss on the answer's first token by
distance (nats; chance: ln 12 = 2.48), over the last steps.

    python benchmarks/recall_probe.py [--steps 600] [--thetas 20 1000 1e6] [--stem NAME]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.machine import describe, markdown, write_results  # noqa: E402
from benchmarks.position_probe import LR, descend, plot_curves, random_model  # noqa: E402
from ros_vilasr.core.models import EMBEDDED_DIR  # noqa: E402
from ros_vilasr.core.processor import load_processor  # noqa: E402
from ros_vilasr.synth.scene import CATALOG  # noqa: E402

OBJECTS = [name for name, _, _ in CATALOG]
MAX_FILLER = 60  # sentences of ~6 tokens: distances up to ~360 tokens
BUCKETS = ((0, 60), (60, 180), (180, 10_000))  # tokens from the question's object to the answer
BATCH = 8


def example(tokenizer, rng: random.Random) -> tuple[list[int], int, int]:
    """Token ids, the index of the answer's first token, and its distance from the question's object."""
    target = rng.choice(OBJECTS)
    question = tokenizer.encode(f"Which object is closest to the {target}?")
    filler = "".join(f" I see the {rng.choice(OBJECTS)}." for _ in range(rng.randint(0, MAX_FILLER)))
    prompt = question + tokenizer.encode(filler + " It asked about the")
    answer = tokenizer.encode(f" {target}")
    named = len(tokenizer.encode("Which object is closest to the"))
    return prompt + answer, len(prompt), len(prompt) - named


def answer_loss(model, ids: list[int], at: int) -> torch.Tensor:
    logits = model(input_ids=torch.tensor([ids[:at]])).logits[0, -1]
    return -torch.log_softmax(logits, -1)[ids[at]]


def bucket(distance: int) -> int:
    return next(i for i, (low, high) in enumerate(BUCKETS) if low <= distance < high)


def tail_mean(curve: list[list[float | None]], n: int) -> np.ndarray:
    """Mean loss per bucket over the last ``n`` steps."""
    return np.nanmean(np.array(curve[-n:], float), 0)


def train(theta: float, steps: int, seed: int, tokenizer) -> list[list[float]]:
    """One loss per step and distance bucket (None where the step had none)."""
    model, optimizer = random_model(theta, seed)
    rng = random.Random(seed)
    curve, start = [], time.monotonic()
    for step in range(steps):
        batch = [example(tokenizer, rng) for _ in range(BATCH)]
        losses = torch.stack([answer_loss(model, ids, at) for ids, at, _ in batch])
        descend(model, optimizer, losses.mean())
        by_bucket = [[] for _ in BUCKETS]
        for loss, (_, _, distance) in zip(losses.tolist(), batch):
            by_bucket[bucket(distance)].append(loss)
        curve.append([float(np.mean(b)) if b else None for b in by_bucket])
        if (step + 1) % 50 == 0:
            print(f"theta {theta:g} step {step + 1}: answer loss by distance "
                  f"{np.round(tail_mean(curve, 50), 3)} ({time.monotonic() - start:.0f} s)", flush=True)
    return curve


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--thetas", type=float, nargs="+", default=[20.0, 1000.0, 1e6])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stem", default="recall_probe", help="result file name")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    tokenizer = load_processor(EMBEDDED_DIR).tokenizer
    window = max(1, min(100, args.steps // 4))
    result = {"machine": describe(), "steps": args.steps, "batch": BATCH, "learning_rate": LR, "seed": args.seed,
              "buckets": BUCKETS, "chance": math.log(len(OBJECTS)), "window": window, "runs": {}}
    for theta in args.thetas:
        curve = train(theta, args.steps, args.seed, tokenizer)
        result["runs"][f"{theta:g}"] = {"curve": curve, "final": tail_mean(curve, window).tolist()}
    write_results(args.out, args.stem, result, report(result, args.stem))
    plot(result, args.out / f"{args.stem}.png")
    return result


def span(low: int, high: int) -> str:
    return f"{low}–{high} tokens" if high < 10_000 else f"over {low} tokens"


def report(r: dict, stem: str = "recall_probe") -> str:
    head = " | ".join(span(*b) for b in r["buckets"])
    rows = [f"| {theta} | " + " | ".join(f"{v:.3f}" for v in run["final"]) + " |" for theta, run in r["runs"].items()]
    return "\n".join([
        "# Recall probe: can the embedded architecture read a word back from further away?", "",
        markdown(r["machine"]), "",
        f"A random text model of the embedded model's shape, trained {r['steps']} steps (batch {r['batch']}, AdamW "
        f"lr {r['learning_rate']:g}, seed {r['seed']}) per text `rope_theta`, in one run: a question names one of "
        "12 objects, random filler sentences name others, and the answer is the question's object. Loss on the "
        f"answer by its distance from the question's object (nats, last {r['window']} steps); chance "
        f"{r['chance']:.2f}.", "",
        f"| rope_theta | {head} |", "|---|---|---|---|", *rows, "",
        f"![learning curves]({stem}.png)", ""])


def plot(r: dict, path: Path) -> None:
    plot_curves(r, path, [span(*b) for b in r["buckets"]], [r["chance"]] * len(r["buckets"]), "chance",
                "answer loss (nats)")


if __name__ == "__main__":
    main()
