"""The embedded model's training record: held-out accuracy per stage beside chance, drawing turns
that execute, turns per dialogue, pass@1 vs pass@k, and the wall time of every recipe step —
from a finished ``vilasr-train recipe recipe_embedded --out RUN`` on this machine.

    python benchmarks/embedded_model.py --run runs/embedded

Writes ``results/embedded_model.{md,json,png}`` with the machine's description.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.machine import describe, markdown  # noqa: E402

RESULTS = Path(__file__).parent / "results"
TARGETS = "maze ≥ 90%; scene mean ≥ chance + 30 points; stage 3 ≥ stage 1 on both; ≥ 95% of drawing turns executable"


def targets(report: dict) -> dict:
    first, last = report["stages"]["stage1"], report["stages"]["stage3"]
    return {
        "maze_ge_90": last["maze_mean"] >= 0.9,
        "scene_ge_chance_plus_30": last["scene_mean"] >= last["scene_chance_mean"] + 0.3,
        "stage3_ge_stage1": last["maze_mean"] >= first["maze_mean"] and last["scene_mean"] >= first["scene_mean"],
        "executable_ge_95": last["executable_drawing_turns"] >= 0.95,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="the recipe's output directory")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    report = json.loads((args.run / "report.json").read_text())
    stage2 = json.loads((args.run / "stage2" / "report.json").read_text())
    result = {"machine": describe(), "recipe": (args.run / "recipe.yaml").read_text(), **report,
              "stage2_sampling": {k: stage2[k] for k in ("questions_sampled", "written") if k in stage2}
              | {"by_data_type": stage2.get("by_data_type", {})},
              "targets": targets(report),
              # the shipped model's greedy answer to every held-out item: what tests/test_embedded_model.py
              # checks the shipped weights against
              "final_predictions": {r["id"]: r["prediction"] for r in map(json.loads, (
                  args.run / "eval_stage3" / "results.jsonl").read_text().splitlines())}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "embedded_model.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    shutil.copyfile(args.run / "report.png", args.out / "embedded_model.png")
    result["curves"] = plot_curves(args.run, args.out / "embedded_model_curves.png")
    text = render(result, (args.run / "report.md").read_text())
    (args.out / "embedded_model.md").write_text(text)
    print(text)
    return result


def _log_history(stage_dir: Path) -> list[dict]:
    """The Trainer's logged metrics of a stage (from its newest checkpoint)."""
    states = sorted(stage_dir.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    return json.loads(states[-1].read_text())["log_history"] if states else []


def plot_curves(run: Path, path: Path) -> dict:
    """Learning curves: perception pretraining loss, stage-1 loss and token accuracy, stage-2 SFT
    loss, stage-3 reward."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {"pretrain": [(h["step"], h["loss"]) for h in _log_history(run / "pretrain") if "loss" in h],
              "stage1": [(h["step"], h["loss"], h.get("mean_token_accuracy")) for h in _log_history(run / "stage1")
                         if "loss" in h],
              "stage2_sft": [(h["step"], h["loss"]) for h in _log_history(run / "stage2" / "sft") if "loss" in h],
              "stage3_reward": [(h["step"], h["reward"]) for h in _log_history(run / "stage3") if "reward" in h]}
    fig, axes = plt.subplots(1, 3 + bool(curves["pretrain"]), figsize=(13 + 4 * bool(curves["pretrain"]), 3.6))
    if curves["pretrain"]:  # a recipe with a pretrain stage
        axes[0].plot(*zip(*curves["pretrain"]))
        axes[0].set_title("pretraining on perception questions: loss")
        axes = axes[1:]
    if curves["stage1"]:
        steps, loss, acc = zip(*curves["stage1"])
        axes[0].plot(steps, loss, label="loss")
        axes[0].plot(steps, acc, label="token accuracy")
        axes[0].legend()
    axes[0].set_title("stage 1 SFT (teacher-forced)")
    if curves["stage2_sft"]:
        axes[1].plot(*zip(*curves["stage2_sft"]))
    axes[1].set_title("stage 2 SFT on kept trajectories: loss")
    if curves["stage3_reward"]:
        axes[2].plot(*zip(*curves["stage3_reward"]), marker="o")
    axes[2].set_title("stage 3 GRPO: mean rollout reward")
    for ax in fig.axes:
        ax.set_xlabel("optimizer step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return curves


def render(r: dict, table: str) -> str:
    wall = r.get("wall_s", {})
    steps = " · ".join(f"{k} {v / 60:.1f} min" for k, v in wall.items())
    met = ", ".join(f"{k}: {'met' if ok else 'NOT met'}" for k, ok in r["targets"].items())
    s2 = r["stage2_sampling"]
    return "\n".join([
        "# Embedded model: held-out accuracy per training stage", "", markdown(r["machine"]), "",
        f"Recipe `recipe_embedded` ({sum(wall.values()) / 60:.0f} min in all on this machine: {steps}; a step "
        "that was interrupted and resumed counts its last run only).",
        "Held-out items come from other seeds than training (unseen rooms, rig poses and mazes); greedy decoding, "
        "scored by the project's scorer (multiple choice: exact; numerical: exact; regression: mean relative "
        "accuracy). Chance: uniform guessing over the options (for open questions: the best constant). Best "
        "constant: the best answer learned from the training answers alone, without looking (the most frequent "
        "one; the median for regression) — a model at this level has learned the answer distribution, not the "
        "scene. pass@1 / pass@k: k sampled dialogues (T = 1) per item, on 3 items per family.", "",
        table, "![accuracy per stage](embedded_model.png)", "",
        "Learning curves:", "", "![learning curves](embedded_model_curves.png)", "",
        f"Stage 2 kept {s2.get('written', 0)} reflective, correct, well-formed trajectories from "
        f"{s2.get('questions_sampled', 0)} sampled questions.", "",
        f"Targets ({TARGETS}): {met}.", ""])


if __name__ == "__main__":
    main()
