"""The shipped embedded model on another device or dtype answers the recipe's held-out items as it
did on the CPU it was evaluated on: each final answer beside the one recorded there
(``results/embedded_model.json``), accuracy, and the wall time of the whole held-out set — run
through the core with the model's profile, as ``vilasr eval`` runs it.

    python benchmarks/device_parity.py --device cuda --dtype float32 bfloat16

Writes ``results/device_parity_<device>.{md,json}`` with the machine's description.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "training"))
from vilasr_train.recipe import load_recipe, make_data  # noqa: E402
from vilasr_train.report import heldout_items, summarize_rows  # noqa: E402

from benchmarks.machine import describe, markdown, write_results  # noqa: E402
from ros_vilasr.core.engines import create_engine  # noqa: E402
from ros_vilasr.core.models import EMBEDDED, prompting, run_profile  # noqa: E402
from ros_vilasr.evaluation.runner import run_evaluation  # noqa: E402

RESULTS = Path(__file__).parent / "results"
RECORD = RESULTS / "embedded_model.json"


def evaluate(items: list, device: str, dtype: str, out: Path) -> tuple[list[dict], float]:
    profile = run_profile(EMBEDDED)
    engine = create_engine("transformers", EMBEDDED, device=device, dtype=dtype, temperature=profile["temperature"])
    start = time.perf_counter()
    try:
        run_evaluation(items, engine, out, "embedded", batch_size=len(items), progress=False, plots=False,
                       max_pixels=profile["max_pixels"], max_new_tokens=profile["max_new_tokens"],
                       **prompting(profile))
    finally:
        engine.close()
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()], time.perf_counter() - start


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", nargs="+", default=["float32"])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    record = json.loads(RECORD.read_text())
    result = {"machine": describe(), "device": torch.cuda.get_device_name() if "cuda" in args.device else args.device,
              "record_machine": record["machine"], "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        recipe = load_recipe("recipe_embedded")
        make_data(recipe, Path(tmp), splits=("heldout",))
        items = heldout_items(Path(tmp))
        family_of = {item.id: item.benchmark for item in items}
        families = sorted(set(family_of.values()))
        for dtype in args.dtype:
            rows, wall = evaluate(items, args.device, dtype, Path(tmp) / dtype)
            scores = {f: [r["score"] for r in rows if family_of[r["id"]] == f] for f in families}
            changed = sorted(r["id"] for r in rows if r["prediction"] != record["final_predictions"][r["id"]])
            result["runs"].append({"dtype": dtype, "items": len(rows), "wall_s": wall, "changed": changed,
                                   "accuracy": {f: sum(s) / len(s) for f, s in scores.items()},
                                   "executable_drawing_turns": summarize_rows(rows)["executable_drawing_turns"]})
    write_results(args.out, f"device_parity_{args.device.split(':')[0]}", result, report(result))
    return result


def report(r: dict) -> str:
    lines = [f"# The embedded model on {r['device']} beside its CPU record", "", markdown(r["machine"]), "",
             f"Recorded on: {markdown(r['record_machine'])}", "",
             "All held-out items of `recipe_embedded` in one batch, greedy, the model's profile.", "",
             "| dtype | items | answers as recorded | accuracy | drawing turns executable | wall s |",
             "|---|---|---|---|---|---|"]
    for run in r["runs"]:
        acc = ", ".join(f"{k} {v:.1%}" for k, v in run["accuracy"].items())
        lines.append(f"| {run['dtype']} | {run['items']} | {run['items'] - len(run['changed'])} / {run['items']} | "
                     f"{acc} | {run['executable_drawing_turns']:.1%} | {run['wall_s']:.1f} |")
    lines += ["", *(f"Changed ({run['dtype']}): {', '.join(run['changed']) or 'none'}" for run in r["runs"]), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
