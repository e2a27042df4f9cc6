"""benchmarks/grounding_probe.py (issue 13's diagnostic) at toy scale: its answers are the named
object's real box centre in the shrunk view, its baselines are what they claim, and a run writes
its results per task."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from benchmarks import grounding_probe as probe  # noqa: E402
from ros_vilasr.core.models import EMBEDDED_DIR  # noqa: E402
from ros_vilasr.core.processor import load_processor  # noqa: E402


def test_answers_are_the_named_objects_centres_and_the_baselines_hold():
    views = probe.views(3, seed=7)
    assert views and all(v.image.shape == (probe.SIZE[1], probe.SIZE[0], 3) for v in views)
    for v in views:
        for x in v.centres.values():
            assert 0 <= x < probe.SIZE[0] and v.image[:, x].std() > 0  # a column of the view, not past it
    processor = load_processor(EMBEDDED_DIR, max_pixels=probe.SIZE[0] * probe.SIZE[1])
    view = views[0]
    name, x = next(iter(view.centres.items()))
    encoding = probe.example(processor, view.faded(name, 1.0), name, x)
    answer = processor.tokenizer.decode([t for t, m in zip(encoding.input_ids, encoding.loss_mask) if m])
    assert answer.startswith(f"x = {x:03d}")

    def view_with(centres):
        return probe.View(view.image, view.ids, view.objects, centres)

    two = [view_with({"a": 10, "b": 30}), view_with({"a": 50, "c": 70})]  # training median 40
    assert probe.baselines(two, two) == {"best_constant": pytest.approx((30 + 10 + 10 + 30) / 4),
                                         "sees_the_image_not_the_name": pytest.approx(10.0)}
    assert [v.centres for v in probe.only(two, ["c"])] == [{"c": 70}]


def test_fading_greys_everything_but_the_named_object():
    view = probe.views(2, seed=7)[0]
    name = max(view.centres, key=lambda n: (view.names == n).sum())
    own = view.names == name
    assert 0.002 < own.mean() < 0.5 and set(np.unique(view.names)) >= {"", *view.centres}
    plain, half, real = (np.asarray(view.faded(name, c)).astype(int) for c in (0.0, 0.5, 1.0))
    assert (real == view.image).all()
    assert (plain[~own] == probe.GREY).all() and view.image[~own].std() > 10
    assert (plain[own] == view.image[own]).all() and (half[own] == view.image[own]).all()
    assert np.abs(half[~own] - (probe.GREY + view.image[~own]) / 2).max() <= 1


def test_a_run_writes_one_curve_per_task_and_curriculum(tmp_path):
    result = probe.main(["--steps", "2", "--eval-every", "1", "--scenes", "4", "--heldout-scenes", "3",
                         "--workers", "2", "--out", str(tmp_path)])
    assert set(result["runs"]) == {f"{t} · {c}" for t in probe.TASKS for c in ("none", "ramp")}
    for run in result["runs"].values():
        assert np.array(run["curve"]).shape == (2, 3) and [s for s, _ in run["evals"]] == [1, 2]
    saved = json.loads((tmp_path / "grounding_probe.json").read_text())
    named = "any object, named before x · ramp"
    assert saved["runs"][named]["evals"] == [list(e) for e in result["runs"][named]["evals"]]
    assert "| the chair only | ramp |" in (tmp_path / "grounding_probe.md").read_text()
    assert (tmp_path / "grounding_probe.png").stat().st_size > 0


def test_the_named_answer_puts_the_name_right_before_the_digits():
    processor = load_processor(EMBEDDED_DIR, max_pixels=probe.SIZE[0] * probe.SIZE[1])
    view = probe.views(2, seed=7)[0]
    encoding = probe.example(processor, view.faded("chair", 1.0), "trash can", 7, say_name=True)
    answer = [processor.tokenizer.decode([t]) for t, m in zip(encoding.input_ids, encoding.loss_mask) if m]
    assert "".join(answer).startswith("trash can007") and answer[answer.index("0") - 2:][:2] == ["trash", " can"]
