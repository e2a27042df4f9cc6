"""Weight-only quantization of the embedded model on this CPU: weight bytes, decode speed and
held-out accuracy, full precision and int8 side by side in the same run.

Held-out items are the shipped recipe's (``recipe_embedded``: unseen rooms, rig poses and mazes),
the first ``--per-family`` of each family, greedy, scored by the project's scorer. Agreement is
the share of items whose two answers are identical. Decode speed: a 3-turn drawing dialogue of
fixed-length turns (``benchmarks/gpu.py``'s), tokens per second of decoding.

    python benchmarks/quantization.py [--per-family 16]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.gpu import DrawingDialogue  # noqa: E402
from benchmarks.machine import describe, markdown, write_results  # noqa: E402
from ros_vilasr.core.engines.hf import TransformersEngine  # noqa: E402
from ros_vilasr.core.models import EMBEDDED, EMBEDDED_DIR, prompting, run_profile  # noqa: E402
from ros_vilasr.evaluation.runner import ResultsLog, run_evaluation  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SCHEMES = ("none", "int8")


def heldout(per_family: int, out: Path) -> list:
    from vilasr_train.recipe import family_tasks, load_recipe
    from vilasr_train.report import heldout_items

    from ros_vilasr.synth.trajectories import write_dataset

    for family, spec in load_recipe("recipe_embedded")["data"]["heldout"].items():
        spec = dict(spec)
        n = min(spec.pop("n"), per_family)
        write_dataset(family_tasks(family, n, **spec), out / "heldout" / family, total=n)
    return heldout_items(out)


def weight_bytes(engine: TransformersEngine) -> int:
    buffer = io.BytesIO()
    torch.save(engine.model.state_dict(), buffer)
    return buffer.tell()


def decode_speed(engine: TransformersEngine, turns: int = 3, tokens: int = 32) -> float:
    engine.eos_id = -1  # fixed-length turns
    dialogue = DrawingDialogue(f"speed-{time.monotonic_ns()}", seed=0, max_new_tokens=tokens)
    decoded = seconds = 0.0
    for _ in range(turns):
        (reply,) = engine.generate([dialogue.request()])
        decoded += engine.timing["decode_steps"]
        seconds += engine.timing["decode_s"]
        dialogue.add(reply)
    engine.forget(dialogue.key)
    return decoded / seconds


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-family", type=int, default=16)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    profile = run_profile(EMBEDDED)
    result = {"machine": describe(), "per_family": args.per_family, "schemes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        items = heldout(args.per_family, Path(tmp) / "data")
        for scheme in SCHEMES:
            engine = TransformersEngine(str(EMBEDDED_DIR), device="cpu", dtype="float32", temperature=0.0,
                                        quantization=scheme)
            out = Path(tmp) / scheme
            started = time.perf_counter()
            summary = run_evaluation(items, engine, out, "embedded", batch_size=16, plots=False,
                                     max_pixels=profile["max_pixels"], max_new_tokens=profile["max_new_tokens"],
                                     **prompting(profile))
            eval_s = time.perf_counter() - started
            log = ResultsLog(out / "results.jsonl")
            log.close()
            result["schemes"][scheme] = {
                "weight_bytes": weight_bytes(engine), "decode_tokens_per_s": decode_speed(engine),
                "accuracy": summary["overall"], "eval_s": eval_s,
                "predictions": {r["id"]: r["prediction"] for r in log.rows}}
            engine.close()
    full, int8 = (result["schemes"][s] for s in SCHEMES)
    same = sum(full["predictions"][k] == int8["predictions"].get(k) for k in full["predictions"])
    result["n_items"] = len(full["predictions"])
    result["agreement"] = same / max(len(full["predictions"]), 1)
    result["accuracy_delta_points"] = 100 * (int8["accuracy"] - full["accuracy"])
    write_results(args.out, "quantization", result, report(result))
    return result


def report(r: dict) -> str:
    rows = [f"| {name} | {s['weight_bytes'] / 2**20:.2f} | {s['decode_tokens_per_s']:.0f} | "
            f"{100 * s['accuracy']:.1f}% | {s['eval_s']:.0f} |" for name, s in r["schemes"].items()]
    return "\n".join([
        "# Quantization: the embedded model on CPU", "", markdown(r["machine"]), "",
        f"{r['n_items']} held-out items of `recipe_embedded` (the first {r['per_family']} per family), greedy; "
        "weight-only quantization of the language model's linear layers (torchao), the vision tower and "
        "embeddings in float32. Same run, same items.", "",
        "| quantization | weights MiB (state dict) | decode tokens/s | held-out accuracy | eval s |",
        "|---|---|---|---|---|", *rows, "",
        f"Answers identical on {100 * r['agreement']:.1f}% of items; accuracy difference int8 − full: "
        f"{r['accuracy_delta_points']:+.1f} points (target: within 1 point).", ""])


if __name__ == "__main__":
    main()
