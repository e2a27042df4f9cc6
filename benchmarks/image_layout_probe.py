"""Image layout probe: does the embedded architecture read where S and G are at every question
length once the image comes after the question?

In the protocol's first user turn the image comes first and the question after it, so the distance
from the image to the answer changes with the question; the perception probe
(perception_probe.md) shows a model of the embedded model's shape reading the cells only at the
distance it was taught at. Here two random models of that shape (the shipped model's config and
tokenizer, new weights, seed 0) are trained alike on the same one-turn perception questions, asked
after random notes or after a maze item's whole question (``synth.look``, contexts notes and maze),
one with the image first, one with the image moved to just before "The index of the given image is
1." (a fixed distance to every answer: the profile's ``image_position: last``). Each is then
probed, in its own layout, on the perception probe's four conditions.

    python benchmarks/image_layout_probe.py   # ~16 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "training"))
from vilasr_train.readout import DIGITS, collator, readout  # noqa: E402

from benchmarks.machine import describe, markdown, write_results  # noqa: E402
from benchmarks.perception_probe import conditions  # noqa: E402
from ros_vilasr.core.models import EMBEDDED_DIR  # noqa: E402
from ros_vilasr.core.processor import load_processor  # noqa: E402
from ros_vilasr.synth import look  # noqa: E402
from ros_vilasr.synth.trajectories import write_dataset  # noqa: E402

RESULTS = Path(__file__).parent / "results"
LAYOUTS = {"image first (the protocol)": "first", "image after the question": "last"}  # prompts.first_user_content


def train(processor, records: list[dict], name: str, steps: int, batch: int, lr: float):
    """A random model of the embedded model's shape trained on ``records``: (model, losses)."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    torch.manual_seed(0)
    rng = random.Random(0)
    model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(EMBEDDED_DIR))
    batches = collator(processor)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    order, losses = [], []
    for step in tqdm(range(1, steps + 1), desc=f"training ({name})", unit="step"):
        for group in opt.param_groups:  # warmup, then cosine
            group["lr"] = lr * min(1.0, step / 30) * 0.5 * (1 + math.cos(math.pi * step / steps))
        total = 0.0
        for _ in range(batch):
            if not order:
                order = rng.sample(range(len(records)), len(records))
            loss = model(**batches.pad([batches.encode(records[order.pop()])])).loss / batch
            loss.backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        losses.append(total)
    return model.eval(), losses


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--train", type=int, default=2000, help="perception questions to train on")
    parser.add_argument("--n", type=int, default=48, help="held-out items per condition")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rows, minutes, processor = [], {}, load_processor(EMBEDDED_DIR)
    with tempfile.TemporaryDirectory() as tmp:
        for layout, position in LAYOUTS.items():
            data = Path(tmp) / position
            write_dataset(look.look_tasks(args.train, seed=104, sizes=(3, 4), contexts=("notes", "maze")),
                          data / "train", total=args.train, image_position=position)
            train_records = [{"conversations": r["conversations"], "images": [str(data / "train" / p)
                                                                              for p in r["images"]]}
                             for r in json.loads((data / "train" / "trajectories.json").read_text())]
            start = time.monotonic()
            model, _ = train(processor, train_records, f"image {position}", args.steps, args.batch, args.lr)
            minutes[layout] = (time.monotonic() - start) / 60
            for condition, records in conditions(data / "probe", args.n, position).items():
                rows.append({"layout": layout, "condition": condition, **readout(processor, model, records)})
    lines = ["| layout | condition | items | " + " | ".join(DIGITS) + " | mean | most frequent digit |",
             "|---|---|---|" + "---|" * (len(DIGITS) + 2)]
    for r in rows:
        cells = " | ".join(f"{h / r['n']:.0%}" for h in r["hits"])
        mean, majority = sum(r["hits"]) / (4 * r["n"]), sum(r["majority"]) / (4 * r["n"])
        lines.append(f"| {r['layout']} | {r['condition']} | {r['n']} | {cells} | **{mean:.0%}** | {majority:.0%} |")
    report = "\n".join([
        "# Image layout probe: the image after the question", "", markdown(describe()), "",
        " ".join(__doc__.split("\n\n")[1].split()), "",
        f"Training per layout: {args.steps} steps of {args.batch} questions (of {args.train}), AdamW lr {args.lr}, "
        f"warmup 30 then cosine; {', '.join(f'{k}: {v:.1f} min' for k, v in minutes.items())}.", "", *lines, ""])
    result = {"machine": describe(), "args": {k: str(v) for k, v in vars(args).items()}, "minutes": minutes,
              "rows": rows}
    write_results(args.out, "image_layout_probe", result, report)
    return result


if __name__ == "__main__":
    main()
