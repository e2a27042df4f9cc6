"""Does the copy the recall probe learns carry to the recipe's own questions? A diagnostic for issue 13.

``recipe_embedded_ask`` pretrains on one-turn questions asking which objects a room question names
(synth.ask), answered in the oracle's first-thought words; after 900 steps of them its first
thoughts still name the same objects whatever the question. The recall probe learns a copy in a
few hundred steps, with its loss on the copied word alone. Here a randomly initialised model of
the embedded model's shape (rotary channels split as the recipe's: ``--rope``) learns the recipe's
ask questions, prompted as the recipe writes them (``--images``) or their text alone, side by side
with the loss on the whole answer turn (as ``sft`` trains) or on the object names in it alone.
Scored on held-out asks, teacher-forced: how often the first token of each object name the answer
gives is the right one (chance: about 1 in 13 per name; the questions name different objects).

    python benchmarks/ask_probe.py [--steps 800] [--losses names turn] [--rope 3e4@1,2,13]
                                   [--images [--text-first N] [--merger-scale 0.25]] [--lr 1e-3]
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.machine import describe, markdown, write_results  # noqa: E402
from benchmarks.position_probe import BATCH, LR, descend, plot_curves, random_model, rope_variant  # noqa: E402
from ros_vilasr.core import chat  # noqa: E402
from ros_vilasr.core.encoding import encode_dialogue  # noqa: E402
from ros_vilasr.core.images import MAX_PIXELS_TRAIN  # noqa: E402
from ros_vilasr.core.models import EMBEDDED_DIR  # noqa: E402
from ros_vilasr.core.processor import load_processor  # noqa: E402
from ros_vilasr.core.session import Session  # noqa: E402
from ros_vilasr.synth.ask import ask_task  # noqa: E402
from ros_vilasr.synth.rig_tasks import ROBOT  # noqa: E402
from ros_vilasr.synth.scene import CATALOG  # noqa: E402

OBJECTS = [name for name, _, _ in CATALOG] + [ROBOT[0]]  # the rig rooms may have the demo's robot
NAME = re.compile("|".join(sorted(OBJECTS, key=len, reverse=True)))
LOSSES = ("turn", "names")


def example(processor, seed: int, index: int, images: bool = False) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Model inputs of ask item ``index`` (its prompt as the recipe writes it; ``images``: with the
    room's images, else its text alone), its turn's loss mask and where its object names start."""
    task = ask_task(seed, index)
    answer = task.turns[0]
    session = Session(task.images, task.question, problem_type=task.problem_type, kind=task.kind,
                      max_pixels=MAX_PIXELS_TRAIN)  # the prompt as the data writer has it
    system, user = session.messages
    if not images:
        user = {"role": "user", "content": "".join(p["text"] for p in user["content"] if p["type"] == "text")}
    messages = [system, user, {"role": "assistant", "content": answer}]
    encoding = encode_dialogue(processor, messages, session.images if images else [])
    full = chat.GENERATION_PROMPT + answer + chat.END + "\n"  # the turn as the encoder tokenises it
    offsets = processor.tokenizer.backend_tokenizer.encode(full, add_special_tokens=False).offsets
    base = len(encoding.input_ids) - len(offsets)
    names = torch.zeros(len(encoding.input_ids), dtype=torch.bool)  # the token each object name starts in
    for match in NAME.finditer(full):
        names[base + next(j for j, (a, b) in enumerate(offsets) if a <= match.start() < b)] = True
    return encoding.model_inputs(), torch.tensor(encoding.loss_mask, dtype=torch.bool), names


def losses(model, inputs: dict, mask: torch.Tensor, names: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Mean loss over the turn, over the names' first tokens, and how many of those are argmax-right."""
    logits = model(**inputs).logits[0, :-1]
    targets = inputs["input_ids"][0, 1:]
    nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    turn, named = mask[1:], names[1:]
    right = (logits[named].argmax(-1) == targets[named]).sum()
    return nll[turn].mean(), nll[named].mean(), right, named.sum()


def train(loss_on: str, args, processor, heldout: list) -> tuple[list[list[float]], list[tuple[int, float]]]:
    (theta, section), steps, every = args.rope, args.steps, args.every
    model, optimizer = random_model(theta, args.seed, mrope_section=section)
    for group in optimizer.param_groups:
        group["lr"] = args.lr
    with torch.no_grad():  # image tokens enter the text model at this scale (random: ~4x a text token's norm)
        model.model.visual.merger.mlp[-1].weight.mul_(args.merger_scale)
        model.model.visual.merger.mlp[-1].bias.mul_(args.merger_scale)
    rng, curve, scores, start = random.Random(args.seed), [], [], time.monotonic()
    for step in range(steps):
        pictured = args.images and step >= args.text_first
        batch = [example(processor, 105, rng.randrange(10_000), pictured) for _ in range(BATCH)]
        parts = [losses(model, *b) for b in batch]
        turn = torch.stack([p[0] for p in parts]).mean()
        names = torch.stack([p[1] for p in parts]).mean()
        descend(model, optimizer, turn if loss_on == "turn" else names)
        curve.append([turn.item(), names.item()])
        if (step + 1) % every == 0:
            scores.append((step + 1, score(model, heldout)))
            print(f"{loss_on} step {step + 1}: turn {np.mean([c[0] for c in curve[-every:]]):.3f}, names "
                  f"{np.mean([c[1] for c in curve[-every:]]):.3f}, held-out names right {scores[-1][1]:.1%} "
                  f"({time.monotonic() - start:.0f} s)", flush=True)
    return curve, scores


@torch.no_grad()
def score(model, heldout: list) -> float:
    right, n = 0, 0
    for b in heldout:
        _, _, r, k = losses(model, *b)
        right, n = right + int(r), n + int(k)
    return right / n


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--losses", nargs="+", choices=LOSSES, default=["names", "turn"])
    parser.add_argument("--rope", type=rope_variant, default=rope_variant("3e4@1,2,13"), help="THETA[@T,H,W]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every", type=int, default=50, help="steps between held-out scores")
    parser.add_argument("--heldout", type=int, default=48, help="held-out questions scored")
    parser.add_argument("--images", action="store_true", help="the questions with their images, as the recipe's")
    parser.add_argument("--lr", type=float, default=LR, help="AdamW learning rate (constant)")
    parser.add_argument("--merger-scale", type=float, default=1.0,
                        help="scale the random vision merger's output layer (image tokens' norm) by this")
    parser.add_argument("--text-first", type=int, default=0,
                        help="with --images: train on the text alone for this many steps first (scored with images)")
    parser.add_argument("--stem", default="ask_probe", help="result file name")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    processor = load_processor(EMBEDDED_DIR)
    heldout = [example(processor, 205, i, args.images) for i in range(args.heldout)]
    (theta, section), window = args.rope, max(1, min(100, args.steps // 4))
    result = {"machine": describe(), "steps": args.steps, "batch": BATCH, "learning_rate": args.lr, "seed": args.seed,
              "images": args.images, "text_first": args.text_first, "merger_scale": args.merger_scale,
              "rope_theta": theta, "mrope_section": section, "heldout": args.heldout, "window": window, "runs": {}}
    for loss_on in args.losses:
        curve, scores = train(loss_on, args, processor, heldout)
        result["runs"][loss_on] = {"curve": curve, "scores": scores, "final": scores[-1][1] if scores else None}
    write_results(args.out, args.stem, result, report(result, args.stem))
    plot(result, args.out / f"{args.stem}.png")
    return result


def plot(r: dict, path: Path) -> None:
    plot_curves(r, path, ["loss on the answer turn", "loss on the names"], [np.log(len(OBJECTS))] * 2,
                "chance (names)", "training loss (nats)", run_label="trained on the {}")


def prompted(r: dict) -> str:
    if not r.get("images"):
        return "text only"
    first, scale = r.get("text_first", 0), r.get("merger_scale", 1.0)
    shown = "with their images" + (f" (the vision merger's output layer scaled by {scale:g} at init)"
                                   if scale != 1.0 else "")
    return f"text only for {first} steps, then {shown}" if first else shown


def report(r: dict, stem: str = "ask_probe") -> str:
    rows = [f"| {name} | " + " | ".join(f"{s:.0%}" for _, s in run["scores"]) + " |" for name, run in r["runs"].items()]
    steps = [str(k) for k, _ in next(iter(r["runs"].values()))["scores"]]
    return "\n".join([
        "# Ask probe: does the copy carry to the recipe's own questions?", "", markdown(r["machine"]), "",
        f"A random model of the embedded model's shape (rope_theta {r['rope_theta']:g}, mrope_section "
        f"{r['mrope_section']}), trained {r['steps']} steps (batch {r['batch']}, AdamW lr {r['learning_rate']:g}, "
        f"seed {r['seed']}) on synth.ask's questions, "
        f"{prompted(r)}, with the loss on the whole answer turn (`turn`, "
        "as `sft`) or on the object names' first tokens alone (`names`). Held-out: how many of the first tokens "
        f"of the object names in {r['heldout']} held-out answers are the model's top choice (teacher-forced; "
        "chance about 1 in 13).", "",
        "| loss on | " + " | ".join(steps) + " |", "|---" * (len(steps) + 1) + "|", *rows, "",
        f"![learning curves]({stem}.png)", ""])


if __name__ == "__main__":
    main()
