"""The answer turn alone: given the oracle's dialogue up to its last turn — its drawings drawn
right, fed back as images, their coordinates in its turns — does the model write the right answer?

Every held-out item of ``recipe_embedded``: the oracle trajectory is cut before its final
(answer) turn and the model writes that turn, greedy, with its profile. Beside the model's
accuracy in its own dialogues (``results/embedded_model.json``, after stage 3) this splits a
miss between the drawing turns and the reading of them. Also counted: final turns that draw
again instead of answering, and multiple-choice answers whose letter is not the option the same
turn's thought names ("..., option A.</think> ... <answer>C</answer>").

    python benchmarks/oracle_drawings.py [--model DIR]

Writes ``results/oracle_drawings.{md,json}`` with the machine's description.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "training"))
from vilasr_train.data import normalise, to_messages  # noqa: E402
from vilasr_train.recipe import load_recipe, make_data, prompted_as  # noqa: E402

from benchmarks.machine import describe, markdown, write_results  # noqa: E402
from ros_vilasr.core.engines import create_engine  # noqa: E402
from ros_vilasr.core.images import prepare_image  # noqa: E402
from ros_vilasr.core.models import EMBEDDED, run_profile  # noqa: E402
from ros_vilasr.core.protocol import answer_follows_thought, parse_turn  # noqa: E402
from ros_vilasr.core.scoring import score_answer  # noqa: E402
from ros_vilasr.core.session import Request  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def answer_request(record: dict, key: str, profile: dict) -> Request:
    """The oracle dialogue without its final turn, as the engine's next request."""
    turns = record["conversations"]
    last = max(i for i, t in enumerate(turns) if t["role"] == "assistant")
    images = sum(t["content"].count("<image>") for t in turns[:last])
    return Request(key, to_messages(turns[:last]),
                   [prepare_image(Image.open(p), profile["max_pixels"]).image for p in record["images"][:images]],
                   profile["max_new_tokens"])


def final_turn(text: str, record: dict) -> dict:
    turn = parse_turn(text)
    answered = turn.answer is not None
    prediction = turn.answer if answered else ""
    return {"answered": answered, "prediction": prediction,
            "score": score_answer(prediction, record["answer"], record["problem_type"]) if answered else 0.0,
            "letter_not_named": answered and not answer_follows_thought(text, prediction, record["problem_type"])}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=EMBEDDED)
    parser.add_argument("--report", type=Path, default=RESULTS / "embedded_model.json",
                        help="the model's held-out accuracy per stage (embedded_model.json, a run's report.json)")
    parser.add_argument("--stage", default="stage3", help="the stage of --report the model is")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    profile = run_profile(args.model)
    engine = create_engine("transformers", args.model, device="cpu", dtype="float32", temperature=0.0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        recipe = prompted_as(load_recipe("recipe_embedded"), profile)  # the prompts the model was trained with
        make_data(recipe, Path(tmp), splits=("heldout",))
        for family in recipe["data"]["heldout"]:
            folder = Path(tmp) / "heldout" / family
            records = [normalise(r, family, folder) | {k: r[k] for k in ("id", "answer", "problem_type",
                                                                       "original_question_type")}
                       for r in json.loads((folder / "trajectories.json").read_text())]
            replies = engine.generate([answer_request(r, r["id"], profile) for r in records])
            rows += [{"id": r["id"], "task": r["original_question_type"], "answer": r["answer"], "text": reply.text,
                      **final_turn(reply.text, r)} for r, reply in zip(records, replies)]
    engine.close()
    free = json.loads(args.report.read_text())["stages"][args.stage]["accuracy"]
    by_task = defaultdict(list)
    for row in rows:
        by_task[row["task"]].append(row)
    result = {"machine": describe(), "model": str(args.model), "stage": args.stage, "rows": rows, "tasks": {
        task: {"n": len(rs), "oracle_drawings": sum(r["score"] for r in rs) / len(rs), "own_dialogue": free.get(task),
               "drew_again": sum(not r["answered"] for r in rs),
               "letter_not_named": sum(r["letter_not_named"] for r in rs)}
        for task, rs in sorted(by_task.items())}}
    write_results(args.out, "oracle_drawings", result, report(result))
    return result


def report(r: dict) -> str:
    lines = [f"# The answer turn alone: {Path(r['model']).name} given the oracle's drawings", "",
             markdown(r["machine"]), "", __doc__.split("\n\n")[1].replace("\n", " "), "",
             f"| sub-task | n | right, given the oracle's drawings | right, in its own dialogues ({r['stage']}) | "
             "drew again instead | answer letter ≠ option its thought names |", "|---|---|---|---|---|---|"]
    for task, t in r["tasks"].items():
        own = f"{t['own_dialogue']:.1%}" if t["own_dialogue"] is not None else "–"
        lines.append(f"| {task} | {t['n']} | {t['oracle_drawings']:.1%} | {own} | {t['drew_again']} | "
                     f"{t['letter_not_named']} |")
    return "\n".join(lines + [""])


if __name__ == "__main__":
    main()
