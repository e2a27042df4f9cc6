"""The shipped embedded model answers held-out questions by drawing: loaded by name, run through
the core exactly as the node and ``vilasr eval`` run it (its profile: grid, greedy, token cap), on
items of the recipe's held-out seeds (rooms, rig poses and mazes it never saw in training).

Fails if the weights stopped matching the code (tokenizer, processor, protocol, renderer) or were
replaced without their record: every dialogue must draw, see its drawings and answer in the
protocol, and the answers must be the ones recorded when the model was evaluated
(benchmarks/results/embedded_model.json, written by benchmarks/embedded_model.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from vilasr_train.recipe import family_tasks, load_recipe
from vilasr_train.report import heldout_items, summarize_rows

from ros_vilasr.core.engines import create_engine
from ros_vilasr.core.models import EMBEDDED, prompting, run_profile
from ros_vilasr.evaluation.runner import run_evaluation
from ros_vilasr.synth.trajectories import write_dataset

PER_FAMILY = {"rig": 6, "maze": 3, "scene": 3}
RECORD = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "embedded_model.json"
MAX_CHANGED = 1  # greedy decoding may flip a near-tie on another CPU's float kernels


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    """The first items of each held-out family of the shipped recipe (same seeds, same items)."""
    data = tmp_path_factory.mktemp("heldout")
    for family, spec in load_recipe("recipe_embedded")["data"]["heldout"].items():
        spec = dict(spec, n=PER_FAMILY[family])
        write_dataset(family_tasks(family, **spec), data / "heldout" / family)
    return heldout_items(data)


@pytest.fixture(scope="module")
def rows(heldout, tmp_path_factory):
    profile = run_profile(EMBEDDED)
    engine = create_engine("transformers", EMBEDDED, device="cpu", dtype="float32", temperature=profile["temperature"])
    out = tmp_path_factory.mktemp("eval")
    try:
        run_evaluation(heldout, engine, out, "embedded", batch_size=12, progress=False, plots=False,
                       max_pixels=profile["max_pixels"], max_new_tokens=profile["max_new_tokens"],
                       **prompting(profile))
    finally:
        engine.close()
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_every_dialogue_draws_and_answers_in_the_protocol(rows):
    assert len(rows) == sum(PER_FAMILY.values())
    summary = summarize_rows(rows)
    assert summary["finish_reasons"] == {"answer": len(rows)}, summary
    assert summary["executable_drawing_turns"] == 1.0
    for row in rows:  # at least one drawing, fed back as a new image, before the answer
        assert row["calls"] >= 2 and row["images"] > len(row["image_path"]), row["id"]


def test_answers_are_the_recorded_ones(rows):
    recorded = json.loads(RECORD.read_text())["final_predictions"]
    changed = [(r["id"], recorded[r["id"]], r["prediction"]) for r in rows if recorded[r["id"]] != r["prediction"]]
    assert len(changed) <= MAX_CHANGED, changed
