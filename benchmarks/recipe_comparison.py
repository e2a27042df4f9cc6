"""Recipe runs side by side: held-out accuracy per stage, and whether the model names the cells of
a maze's start S and goal G in its first thought (what every maze answer builds on).

The maze oracle's first thought is "The green start S is at row r, column c and the red goal G at
row r', column c' ..."; a model that reads the image names the true cells there. Counted on the
held-out maze dialogues each stage was evaluated on (greedy), against the ground truth. "Answers in
another form": not one of the options' letters, or not a number where a number is asked. "Answer =
its thought's option": of the multiple-choice dialogues whose last thought names an option ("...,
option C." / "... is C."), how many answer that letter; beside it, how many would if answers and
named options were drawn independently with the same frequencies (a model that always says "A"
agrees with itself without copying anything), and how many named the right option. "Question's
objects named": of the held-out scene dialogues whose oracle names objects in its first thought ("I
locate the plant and the four candidates"), how many first thoughts name exactly those, read back
from the question. "One-turn questions": held-out accuracy on a pretraining phase's questions
(synth.look's maze cells, synth.ask's question objects), where the recipe has them.

    python benchmarks/recipe_comparison.py --run shipped=runs/embedded --run candidate=runs/look
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "training"))
from vilasr_train.readout import CELL  # noqa: E402
from vilasr_train.recipe import STAGES  # noqa: E402
from vilasr_train.report import family  # noqa: E402

from benchmarks.machine import describe, markdown, write_results  # noqa: E402
from ros_vilasr.core.models import image_position  # noqa: E402
from ros_vilasr.core.protocol import concluded_option, parse_turn  # noqa: E402
from ros_vilasr.core.scoring import parse_number  # noqa: E402
from ros_vilasr.synth.scene import CATALOG  # noqa: E402

RESULTS = Path(__file__).parent / "results"
OBJECT = re.compile(r"\bthe ({})\b".format("|".join(name for name, _, _ in CATALOG)))


def named_cells(run: Path, stage: str) -> dict:
    """How often the first thought of a held-out maze dialogue names S's and G's true cells, and
    how often the single most frequent cell would be right (what naming one cell always scores)."""
    truth = {i["id"]: i["ground_truth"] for i in json.loads((run / "data/heldout/maze/eval.json").read_text())}
    counts = {"n": 0, "S": 0, "G": 0} | {
        f"{key}_constant": Counter(tuple(t[end]) for t in truth.values()).most_common(1)[0][1]
        for key, end in (("S", "start"), ("G", "goal"))}
    for line in (run / f"eval_{stage}" / "results.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["id"] not in truth:
            continue
        first = next(m["content"] for m in row["conversations"] if m["role"] == "assistant")
        named = [tuple(int(x) - 1 for x in cell) for cell in CELL.findall(first)[:2]]  # 1-based in the text
        counts["n"] += 1
        for key, cell in zip("SG", named):
            counts[key] += cell == tuple(truth[row["id"]]["start" if key == "S" else "goal"])
    return counts


def wrong_form(row: dict) -> bool:
    """An answer in another form than its question asks: not one of the option letters, or not a
    number (a small model that lost track of its question answers the way another sub-task does)."""
    answer = str(row["prediction"] or "").strip()
    if row["options"]:
        return answer not in {option.split(".", 1)[0].strip() for option in row["options"]}
    return row["problem_type"] in ("numerical", "regression") and parse_number(answer) is None


def wrong_forms(run: Path, stage: str) -> dict:
    """Per family (maze, scene), answers of the stage's evaluation in another form, and items."""
    counts = Counter()
    for line in (run / f"eval_{stage}" / "results.jsonl").read_text().splitlines():
        row = json.loads(line)
        fam = family(row["original_question_type"])
        counts[fam] += wrong_form(row)
        counts[f"{fam}_n"] += 1
    return dict(counts)


def question_objects(run: Path, stage: str) -> dict:
    """Held-out scene dialogues whose oracle's first thought names objects, and how many of the
    stage's first thoughts name exactly the same ones."""
    oracle = {r["id"]: first_thought_objects(r["conversations"])
              for f in sorted(run.glob("data/heldout/*/trajectories.json")) for r in json.loads(f.read_text())}
    counts = Counter()
    for line in (run / f"eval_{stage}" / "results.jsonl").read_text().splitlines():
        row = json.loads(line)
        if oracle.get(row["id"]) and family(row["original_question_type"]) == "scene":  # not one-turn asks
            counts["n"] += 1
            counts["named"] += first_thought_objects(row["conversations"]) == oracle[row["id"]]
    return dict(counts)


def first_thought_objects(conversations: list[dict]) -> frozenset[str]:
    """The catalogue objects a dialogue's first thought names ("the plant")."""
    first = next((m.get("content", m.get("value")) for m in conversations
                  if m.get("role", m.get("from")) in ("assistant", "gpt")), "")
    return frozenset(OBJECT.findall(parse_turn(first).thought or ""))


def thought_agreement(run: Path, stage: str) -> dict:
    """Over the stage's multiple-choice dialogues whose last thought names an option
    (``own_option``): how many, how many answer it, how many would by independence, how many are right."""
    named, answered, right = [], [], 0
    for line in (run / f"eval_{stage}" / "results.jsonl").read_text().splitlines():
        row = json.loads(line)
        if (own := own_option(row)) is not None:
            named.append(own[0])
            answered.append(own[1])
            right += own[0] == row["answer"]
    answers = Counter(answered)
    return {"thought_named": len(named), "answer_is_thought": sum(map(str.__eq__, named, answered)),
            "answer_is_thought_independent": sum(answers[x] for x in named) / max(len(named), 1),
            "thought_right": right}


def own_option(row: dict) -> tuple[str, str] | None:
    """(the option letter its last thought names, its answer) for a multiple-choice dialogue whose
    last thought names one; None otherwise."""
    last = [m["content"] for m in row["conversations"] if m["role"] == "assistant"][-1:]
    named = concluded_option(parse_turn(last[0]).thought) if row["options"] and last else None
    return None if named is None else (named, str(row["prediction"] or "").strip())


def stage_row(run: Path, stage: str) -> dict | None:
    path = run / f"eval_{stage}" / "stage_summary.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    means = {fam: float(np.mean([a for t, a in summary["accuracy"].items() if family(t) == fam]))
             for fam in ("maze", "scene")}
    one_turn = [a for t, a in summary["accuracy"].items() if family(t) in ("look", "ask")]
    return {"stage": stage, **means, "executable": summary["executable_drawing_turns"],
            "one_turn": float(np.mean(one_turn)) if one_turn else None, "cells": named_cells(run, stage),
            "wrong_form": wrong_forms(run, stage), "agreement": thought_agreement(run, stage),
            "question_objects": question_objects(run, stage),
            "image_position": image_position(str(run / "init"))}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, help="NAME=DIR of a recipe run, in table order")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rows = []
    for spec in args.run:
        name, _, path = spec.partition("=")
        rows += [{"run": name} | r for s in STAGES if (r := stage_row(Path(path), s))]
    lines = ["| run | layout | stage | maze mean | scene mean | one-turn questions | drawing turns executable "
             "| S's cell named | G's cell named | one cell always | answers in another form: maze, scene "
             "| answer = its thought's option (independent; right) | question's objects named |", "|---" * 13 + "|"]
    for r in rows:
        c, forms, agree, asked = r["cells"], r["wrong_form"], r["agreement"], r["question_objects"]
        one_turn = "—" if r["one_turn"] is None else f"{r['one_turn']:.1%}"
        lines.append(f"| {r['run']} | image {r['image_position']} | {r['stage']} | {r['maze']:.1%} | {r['scene']:.1%} "
                     f"| {one_turn} | {r['executable']:.1%} | {c['S']}/{c['n']} | {c['G']}/{c['n']} "
                     f"| S {c['S_constant']}, G {c['G_constant']} | {forms.get('maze', 0)}/{forms.get('maze_n', 0)}, "
                     f"{forms.get('scene', 0)}/{forms.get('scene_n', 0)} | {agree['answer_is_thought']}/"
                     f"{agree['thought_named']} ({agree['answer_is_thought_independent']:.0f}; "
                     f"{agree['thought_right']}) | {asked.get('named', 0)}/{asked.get('n', 0)} |")
    report = "\n".join(["# Recipe runs side by side", "", markdown(describe()), "",
                        " ".join(__doc__.split("\n\n")[1].split()), "",
                        f"Runs: {', '.join(args.run)}.", "", *lines, ""])
    result = {"machine": describe(), "runs": args.run, "rows": rows}
    write_results(args.out, "recipe_comparison", result, report)
    return result


if __name__ == "__main__":
    main()
