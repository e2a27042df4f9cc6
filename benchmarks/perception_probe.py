"""Perception probe: does a model read where a maze's S and G are, and does it still when the
question around the image changes?

For each model, teacher-forced on the recipe's held-out mazes: the share of the four
cell digits (S row, S column, G row, G column) of "The green start S is at row r, column c and the
red goal G at row r', column c' ..." that the model predicts, beside the most frequent digit.
Conditions: the short perception question (``synth.look``), the same with ten more words in it,
a maze item's whole question before it, and the first turn of the held-out maze dialogues (where
the drawing tasks need it). Each model is asked in its own prompt layout (its profile's
``image_position``). "S read as G": S's digits predicted as G's, of those where the two differ (a
model that finds one disc only).

    python benchmarks/perception_probe.py --model pretrained=RUN/pretrain --model stage1=RUN/stage1 ...
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "training"))
from vilasr_train.readout import DIGITS, first_turn, load_records, readout  # noqa: E402

from benchmarks.machine import describe, markdown, write_results  # noqa: E402
from ros_vilasr.core.models import image_position  # noqa: E402
from ros_vilasr.core.processor import load_processor  # noqa: E402

RESULTS = Path(__file__).parent / "results"
FILLER = "Moving only through open passages between adjacent cells."  # ten words


def conditions(out: Path, n: int, image_position: str = "first", recipe: str = "recipe_embedded"
               ) -> dict[str, list[dict]]:
    """The four sets of records, written under ``out`` in the prompt layout ``image_position``: the
    recipe's held-out maze items (its seed, sizes and labels), each asked four ways."""
    from vilasr_train.recipe import load_recipe

    from ros_vilasr.synth import look, maze
    from ros_vilasr.synth.trajectories import write_dataset

    spec = load_recipe(recipe)["data"]["heldout"]["maze"]
    seed, sizes, labels = spec["seed"], tuple(spec["sizes"]), spec.get("labels", False)

    def asked(contexts=("short",), filler: bool = False) -> list:
        tasks = [look.look_task(seed, i, sizes, contexts, labels) for i in range(n)]
        return [replace(t, question=t.question.replace("maze. ", f"maze. {FILLER} ", 1)) if filler else t
                for t in tasks]

    sets = {"short question": asked(), "ten more words": asked(filler=True),
            "after a maze question": asked(("maze",)),
            "maze dialogue, first turn": [maze.maze_task(seed, i, sizes=sizes, labels=labels) for i in range(n)]}
    records = {}
    for k, (name, tasks) in enumerate(sets.items()):
        write_dataset(tasks, out / str(k), total=n, image_position=image_position)
        records[name] = [first_turn(r) for r in load_records(out / str(k) / "trajectories.json")]
    return records


def load(model_dir: str):
    """(processor, model in eval mode) of a checkpoint directory."""
    from transformers import AutoModelForImageTextToText

    return load_processor(model_dir), AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()


def run_model(spec: str, sets_in) -> list[dict]:
    """The model's rows, on ``sets_in(layout)``: the conditions' records in its prompt layout."""
    name, _, path = spec.partition("=")
    processor, model = load(path)
    rows = []
    for condition, records in sets_in(image_position(path)).items():
        rows.append({"model": name, "condition": condition, **readout(processor, model, records)})
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="NAME=DIR, in table order")
    parser.add_argument("--n", type=int, default=48, help="items per condition")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="perception_probe", help="results file stem")
    parser.add_argument("--recipe", default="recipe_embedded", help="whose held-out mazes to ask about")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        sets: dict[str, dict] = {}  # per layout, written once for every model asked in it

        def sets_in(position: str) -> dict:
            if position not in sets:
                sets[position] = conditions(Path(tmp) / position, args.n, position, args.recipe)
            return sets[position]
        rows = [run_model(spec, sets_in) for spec in args.model]
    lines = ["| model | condition | items | " + " | ".join(DIGITS) + " | mean | most frequent digit | S read as G |",
             "|---|---|---|" + "---|" * (len(DIGITS) + 3)]
    for r in (r for per_model in rows for r in per_model):
        cells = " | ".join(f"{h / r['n']:.0%}" for h in r["hits"])
        mean, majority = sum(r["hits"]) / (4 * r["n"]), sum(r["majority"]) / (4 * r["n"])
        lines.append(f"| {r['model']} | {r['condition']} | {r['n']} | {cells} | **{mean:.0%}** | {majority:.0%} "
                     f"| {r['s_as_g']}/{r['s_differs']} |")
    report = "\n".join([
        "# Perception probe: where are S and G, and does the answer survive a longer question?", "",
        markdown(describe()), "", __doc__.split("\n\n")[1].replace("\n", " "), "",
        f"Models: {', '.join(args.model)}.", "", *lines, ""])
    result = {"machine": describe(), "models": args.model, "rows": [r for per_model in rows for r in per_model]}
    write_results(args.out, args.name, result, report)
    return result


if __name__ == "__main__":
    main()
