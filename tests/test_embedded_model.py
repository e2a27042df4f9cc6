"""The shipped embedded model answers held-out questions by drawing: loaded by name, run through
the core exactly as the node and ``vilasr eval`` run it (its profile: grid, greedy, token cap), on
items of the recipe's held-out seeds (rooms, rig poses and mazes it never saw in training).

Fails if training regressed or the weights stopped matching the code (tokenizer, processor,
protocol): every dialogue must draw, see its drawings and answer in the protocol, and the answers
must be right at least as often as the model's recorded held-out accuracy says they should be.
"""

from __future__ import annotations

import pytest

from ros_vilasr.core.engines import create_engine
from ros_vilasr.core.models import EMBEDDED, run_profile
from ros_vilasr.evaluation.runner import run_evaluation
from ros_vilasr.synth.trajectories import write_dataset
from vilasr_train.recipe import family_tasks, heldout_items, load_recipe, summarize_rows

PER_FAMILY = {"rig": 6, "maze": 3, "scene": 3}
MIN_CORRECT = 4  # of 12; see benchmarks/results/embedded_model.md for the model's held-out accuracy


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
                       max_pixels=profile["max_pixels"], max_new_tokens=profile["max_new_tokens"])
    finally:
        engine.close()
    import json

    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_every_dialogue_draws_and_answers_in_the_protocol(rows):
    assert len(rows) == sum(PER_FAMILY.values())
    summary = summarize_rows(rows)
    assert summary["finish_reasons"] == {"answer": len(rows)}, summary
    assert summary["executable_drawing_turns"] == 1.0
    for row in rows:  # at least one drawing, fed back as a new image, before the answer
        assert row["calls"] >= 2 and row["images"] > len(row["image_path"]), row["id"]


def test_answers_are_right_more_often_than_chance(rows):
    correct = sum(r["score"] >= 1.0 for r in rows)
    assert correct >= MIN_CORRECT, [(r["id"], r["prediction"], r["answer"]) for r in rows]
