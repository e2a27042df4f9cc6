"""Stage 1's training step, side by side: the recipe's `sft_embedded` as shipped and with overrides
(`bf16=true`: CPU autocast), the same steps on the same data from the same random model, one after
the other in one run; each further `--run`: the same steps on another recipe run's data from its
random model (e.g. another system prompt). Reports each variant's seconds per step, tokens per
step and training loss (an override that changes the numbers shows there).

    python benchmarks/stage1_step.py --run runs/embedded --steps 24 --variant bf16=true
    python benchmarks/stage1_step.py --run runs/embedded --run runs/brief --steps 40
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.machine import describe, markdown, write_results  # noqa: E402

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parent.parent
LOGGED = re.compile(r"'(train_runtime|train_loss|num_input_tokens_seen)': '?([0-9.]+)")


def timed_steps(run: Path, steps: int, overrides: list[str]) -> dict:
    """``vilasr-train sft`` for ``steps`` steps from the run's random model on its training data."""
    data = [arg for f in sorted(run.glob("data/train/*/trajectories.json")) for arg in ("--data", str(f))]
    with tempfile.TemporaryDirectory() as out:
        sets = [arg for kv in [f"max_steps={steps}", "save_steps=100000", f"logging_steps={steps}",
                               "include_num_input_tokens_seen=true", *overrides] for arg in ("--set", kv)]
        done = subprocess.run([sys.executable, "-m", "vilasr_train.cli", "sft", "--config", "sft_embedded",
                               "--model", str(run / "init"), *data, "--out", out, *sets],
                              cwd=ROOT, capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'training'}"})
    logged = dict(LOGGED.findall(done.stdout + done.stderr))  # tokens: logged once, at the last step
    return {"run": str(run), "overrides": overrides, "s_per_step": float(logged["train_runtime"]) / steps,
            "tokens_per_step": float(logged["num_input_tokens_seen"]) / steps,
            "train_loss": float(logged["train_loss"])}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, action="append", required=True,
                        help="a recipe run with init/ and data/train/ (repeat: the first is the baseline)")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--variant", action="append", default=[], help="KEY=VALUE[,KEY=VALUE]: one variant")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="stage1_step", help="the results' file name")
    args = parser.parse_args(argv)
    first, *others = args.run
    rows = [timed_steps(first, args.steps, v.split(",") if v else []) for v in ["", *args.variant]]
    rows += [timed_steps(run, args.steps, []) for run in others]
    base = rows[0]["s_per_step"]
    lines = ["| run | variant | s per step | vs first | tokens per step | training loss |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['run']} | {', '.join(r['overrides']) or 'sft_embedded as shipped'} | {r['s_per_step']:.2f} "
              f"| {r['s_per_step'] / base - 1:+.0%} | {r['tokens_per_step']:.0f} | {r['train_loss']:.4f} |"
              for r in rows]
    report = "\n".join(["# Stage 1's training step", "", markdown(describe()), "",
                        " ".join(__doc__.split("\n\n")[0].split()), "",
                        f"{args.steps} steps (batch 1 x 4 accumulated) from each run's init/.", "", *lines, ""])
    result = {"machine": describe(), "steps": args.steps, "rows": rows}
    write_results(args.out, args.name, result, report)
    return result


if __name__ == "__main__":
    main()
