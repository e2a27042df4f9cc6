"""Do small mazes teach the larger ones? Where the goal is, read by stage 1 alone.

A ~0.3 M-parameter model of the recipe's architecture (``recipe_embedded``'s rope_theta, one
vision layer, 224x224 mazes) is taught one perception question ("In which cell is the red goal
G?", ``synth.look``) by ``vilasr-train recipe`` from nothing: data, tokenizer, model, stage 1, and
the held-out evaluation of the recipe's runner (exact cell, greedy) on unseen mazes of one size.
Conditions differ only in the maze sizes of the training questions; "most frequent cell" is the
best constant answer learned from the training answers. The suite's recipe test is the 2x2 case
at 200 steps. ``--full``: the recipe's own model and pixel budget on the recipe's maze sizes, with
and without 2x2 mazes (``results/size_curriculum_probe_recipe_model.md``).

    python benchmarks/size_curriculum_probe.py [--steps 1200] [--full]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "training"))
from vilasr_train.recipe import load_recipe, run  # noqa: E402
from vilasr_train.report import baselines  # noqa: E402

from benchmarks.machine import describe, markdown, write_results  # noqa: E402

RESULTS = Path(__file__).parent / "results"
# (name, training maze sizes, held-out size, training seeds)
CONDITIONS = [("3x3 only", [3], 3, (7, 17)), ("2x2 and 3x3", [2, 3], 3, (7, 17)),
              ("4x4 only", [4], 4, (7,)), ("2x2, 3x3 and 4x4", [2, 3, 4], 4, (7,))]
MODELS = {False: "tiny (~0.3 M parameters, 224x224 mazes)", True: "the recipe's (2.3 M parameters, 448x448 mazes)"}
# --full: the recipe's model on the recipe's maze sizes, with and without 2x2
FULL_CONDITIONS = [("3x3 and 4x4", [3, 4], 4, (7,)), ("2x2, 3x3 and 4x4", [2, 3, 4], 4, (7,))]


def tiny_model(recipe: dict, **text) -> None:
    """A ~0.3 M-parameter model of the recipe's architecture."""
    recipe["model"].update(vocab_size=700, text={"hidden_size": 96, "intermediate_size": 192, "num_hidden_layers": 2,
                                                 "num_attention_heads": 3, "num_key_value_heads": 1,
                                                 "mrope_section": [4, 6, 6], **text},
                           vision={"depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 1,
                                   "fullatt_block_indexes": [0]})


def goal_recipe(sizes: list[int], heldout_size: int, steps: int, n: int = 400, seed: int = 7,
                tiny: bool = True) -> dict:
    """``recipe_embedded`` reduced to the goal's cell: ``n`` training questions on mazes of
    ``sizes``, 24 held-out ones of ``heldout_size``, ``steps`` of stage 1 (batch 4), with the tiny
    model at 224x224 or (``tiny`` False) the recipe's own model and pixel budget."""
    recipe = load_recipe("recipe_embedded")
    goal = {"family": "look", "asks": ["goal"]}
    recipe["data"] = {"train": {"look": {**goal, "sizes": sizes, "n": n, "seed": seed}},
                      "heldout": {"look": {**goal, "sizes": [heldout_size], "n": 24, "seed": 8}},
                      "rl": {"look": {**goal, "sizes": [heldout_size], "n": 2, "seed": 9}}}
    if tiny:
        tiny_model(recipe, rope_theta=recipe["model"]["text"]["rope_theta"])
        recipe["model"]["max_pixels"] = 50176  # mazes at 224x224: 64 image tokens
    recipe["stages"]["stage1"]["set"] = {"max_steps": steps, "learning_rate": 3.0e-3, "warmup_steps": 10,
                                         "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
                                         "save_steps": steps, "logging_steps": 20}
    recipe["eval"].update(batch_size=12, max_new_tokens=48)
    return recipe


def heldout_accuracy(recipe: dict, out: Path) -> tuple[float, float]:
    """Run the recipe to its stage-1 evaluation in ``out``; (accuracy, most frequent cell's accuracy)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    run(str(out / "recipe.yaml"), out / "run", until="eval_stage1")
    summary = json.loads((out / "run/eval_stage1/stage_summary.json").read_text())
    return summary["accuracy"]["look_maze_ends"], baselines(out / "run/data")["chance"]["look_maze_ends"]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--full", action="store_true", help="the recipe's model instead of the tiny one")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, sizes, held, seeds in FULL_CONDITIONS if args.full else CONDITIONS:
            for seed in seeds:
                recipe = goal_recipe(sizes, held, args.steps, seed=seed, tiny=not args.full)
                accuracy, constant = heldout_accuracy(recipe, Path(tmp) / f"{name}-{seed}".replace(" ", "_"))
                rows.append({"condition": name, "train_sizes": sizes, "heldout_size": held, "seed": seed,
                             "accuracy": accuracy, "most_frequent_cell": constant})
    lines = ["| training mazes | held-out mazes | training seed | held-out accuracy | most frequent cell |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['condition']} | {r['heldout_size']}x{r['heldout_size']} | {r['seed']} | {r['accuracy']:.1%} "
              f"| {r['most_frequent_cell']:.1%} |" for r in rows]
    report = "\n".join(["# Size curriculum probe: do small mazes teach the larger ones?", "", markdown(describe()), "",
                        " ".join(__doc__.split("\n\n")[1].split()), "",
                        f"Model: {MODELS[args.full]}; {args.steps} stage-1 steps of 4 questions "
                        "(400 training questions), 24 held-out mazes.",
                        "", *lines, ""])
    result = {"machine": describe(), "steps": args.steps, "model": "recipe" if args.full else "tiny", "rows": rows}
    write_results(args.out, "size_curriculum_probe" + ("_recipe_model" if args.full else ""), result, report)
    print(report)
    return result


if __name__ == "__main__":
    main()
