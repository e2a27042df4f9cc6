"""Where the model's held-out loss is: teacher-forced on the oracle's own dialogues, each target
token of the assistant turns is put in one class and its loss (nats) averaged per class.

Classes: ``cell`` (the digits of "row 2, column 3": where S and G were seen), ``coordinate``
(digits of a drawing's JSON: where a box or line goes), ``other digit`` (counts and sizes in the
thoughts), ``answer letter`` / ``answer number`` (inside ``<answer>``: an option's letter, a
number), ``text`` (everything else: the protocol, the thoughts' words). Tokens the model can get
from the text alone (the protocol, an answer that copies the option or number its thought just
named) cost little once it is trained; the digits that say where things are in the image cost
what perception has not learned. Every held-out item of ``recipe_embedded``.

Beside it, whether the image tokens know where they are: Qwen2.5-VL's vision tower has no
absolute position embedding (rotary positions steer its attention, they are not added to the
tokens), so a token's place in the image is in its vector only as far as the tower worked it out
from the content around it. A ridge read-out of each vision-output token's row and column, fit on
3/4 of the held-out input images and scored (R²) on the rest: 1 would be a token that carries its
place, 0 one that does not.

    python benchmarks/loss_breakdown.py [--model NAME=DIR ...]

Writes ``results/loss_breakdown.{md,json}`` with the machine's description.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "training"))
from vilasr_train.data import IGNORE, DialogueCollator, normalise  # noqa: E402
from vilasr_train.recipe import load_recipe, make_data, prompted_as  # noqa: E402

from benchmarks.machine import describe, markdown, write_results  # noqa: E402
from ros_vilasr.core.models import EMBEDDED, resolve_model, run_profile  # noqa: E402
from ros_vilasr.core.processor import load_processor  # noqa: E402

RESULTS = Path(__file__).parent / "results"
# a token of several classes takes the first
CLASSES = ("cell", "coordinate", "other digit", "answer letter", "answer number", "text")
RIDGE = 1e-2  # the read-out's ridge penalty
SPANS = {"answer": re.compile(r"<answer>(.*?)</answer>", re.S), "cell": re.compile(r"(?:row|column) (\d+)"),
         "coordinate": re.compile(r"```json(.*?)```", re.S)}


def char_classes(turn: str) -> list[str]:
    """The class of every character of one assistant turn."""
    classes = ["other digit" if c.isdigit() else "text" for c in turn]
    for cls in ("coordinate", "cell", "answer"):  # later ones win
        for match in SPANS[cls].finditer(turn):
            name = cls  # an answer is a letter or a number as a whole
            if cls == "answer":
                name = "answer letter" if match.group(1).strip().isalpha() else "answer number"
            for i in range(*match.span(1)):
                if cls == "answer" or turn[i].isdigit():
                    classes[i] = name
    return classes


def dialogue_losses(model, collator, record: dict) -> list[tuple[str, str, float]]:
    """(class, token, loss) of every target token of one teacher-forced dialogue."""
    batch = collator([record])
    batch.pop("data_problems")
    labels = batch.pop("labels")[0]
    with torch.no_grad():
        logits = model(**batch).logits[0].float()
    nll = torch.nn.functional.cross_entropy(logits[:-1], labels[1:], ignore_index=IGNORE, reduction="none")
    turns, turn = [], []  # (token, loss) of each assistant turn: runs of target tokens
    for p in range(1, len(labels)):
        if labels[p] == IGNORE:
            turn = []
        else:
            if not turn:
                turns.append(turn)
            turn.append((collator.processor.tokenizer.decode([int(labels[p])]), float(nll[p - 1])))
    out = []
    for turn in turns:
        classes, start = char_classes("".join(token for token, _ in turn)), 0
        for token, loss in turn:
            mine = set(classes[start:start + len(token)]) or {"text"}
            out.append((min(mine, key=CLASSES.index), token, loss))
            start += len(token)
    return out


def position_readout(model, processor, images: list[Image.Image]) -> dict:
    """R² of a linear read-out of each vision-output token's row and column (see the module doc)."""
    features, places = [], []
    for image in images:
        inputs = processor.image_processor(images=[image], return_tensors="pt")
        with torch.no_grad():
            out = model.model.visual(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"])
        features.append(getattr(out, "pooler_output", out).float().numpy())  # one row per merged token
        merge = processor.image_processor.merge_size  # merged tokens: merge x merge patches each
        _, h, w = inputs["image_grid_thw"][0].tolist()
        h, w = h // merge, w // merge
        rows, cols = np.divmod(np.arange(h * w), w)
        places.append(np.stack([rows, cols], 1))
    fit = len(images) * 3 // 4
    x = [np.hstack([f, np.ones((len(f), 1))]) for f in features]
    x_fit, x_score = np.concatenate(x[:fit]), np.concatenate(x[fit:])
    y_fit, y_score = np.concatenate(places[:fit]).astype(float), np.concatenate(places[fit:]).astype(float)
    weights = np.linalg.solve(x_fit.T @ x_fit + RIDGE * np.eye(x_fit.shape[1]), x_fit.T @ y_fit)
    residual = ((x_score @ weights - y_score) ** 2).sum(0)
    r2 = 1 - residual / ((y_score - y_score.mean(0)) ** 2).sum(0)
    return {"row": float(r2[0]), "column": float(r2[1]), "images": len(images)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", metavar="NAME=DIR",
                        help=f"a model to measure (repeatable; default embedded={EMBEDDED})")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    from transformers import Qwen2_5_VLForConditionalGeneration

    models = dict(m.split("=", 1) for m in args.model or [f"embedded={EMBEDDED}"])
    result = {"machine": describe(), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        datasets: dict[tuple, Path] = {}  # one held-out set per prompt layout and system prompt
        for name, path in models.items():
            path = resolve_model(path)
            profile = run_profile(path)
            recipe = prompted_as(load_recipe("recipe_embedded"), profile)  # as it was trained
            prompt = recipe["model"]["system_prompt"]
            key = (recipe["model"]["image_position"], prompt and Path(prompt).read_text())
            data = datasets.setdefault(key, Path(tmp) / str(len(datasets)))
            make_data(recipe, data, splits=("heldout",))  # a set already written is kept
            processor = load_processor(path)
            collator = DialogueCollator(processor, [], max_pixels=profile["max_pixels"], max_length=None)
            model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path).eval()
            families, readout = {}, {}
            for family in recipe["data"]["heldout"]:
                folder = data / "heldout" / family
                items = json.loads((folder / "eval.json").read_text())
                readout[family] = position_readout(model, processor, [Image.open(folder / p).convert("RGB")
                                                                      for i in items for p in i["image_path"]])
                sums, counts = defaultdict(float), defaultdict(int)
                for record in json.loads((folder / "trajectories.json").read_text()):
                    for cls, _, loss in dialogue_losses(model, collator, normalise(record, family, folder)):
                        sums[cls] += loss
                        counts[cls] += 1
                total = sum(sums.values())
                families[family] = {cls: {"tokens": counts[cls], "loss": sums[cls] / counts[cls],
                                          "share": sums[cls] / total} for cls in CLASSES if counts[cls]}
            result["models"][name] = {"path": str(path), "families": families, "position_readout": readout}
    write_results(args.out, "loss_breakdown", result, report(result))
    return result


def report(r: dict) -> str:
    lines = ["# Where the held-out loss is", "", markdown(r["machine"]), "",
             " ".join(__doc__.split("\n\n")[:2]).replace("\n", " "), "",
             "| model | family | class | tokens | loss (nats/token) | share of the loss |", "|---|---|---|---|---|---|"]
    for name, m in r["models"].items():
        for family, classes in m["families"].items():
            for cls, c in classes.items():
                lines.append(f"| {name} | {family} | {cls} | {c['tokens']} | {c['loss']:.3f} | {c['share']:.0%} |")
    lines += ["", "For scale: guessing a cell's row or column uniformly costs "
              f"{math.log(3):.2f} nats on a 3x3 maze, {math.log(4):.2f} on a 4x4 one.", "",
              "## Do the image tokens know where they are?", "", __doc__.split("\n\n")[2].replace("\n", " "), "",
              "| model | family | images | R² of the row | R² of the column |", "|---|---|---|---|---|"]
    for name, m in r["models"].items():
        for family, p in m["position_readout"].items():
            lines.append(f"| {name} | {family} | {p['images']} | {p['row']:.2f} | {p['column']:.2f} |")
    return "\n".join(lines + [""])


if __name__ == "__main__":
    main()
