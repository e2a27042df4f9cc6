"""The recipe report's bootstrap intervals: what they resample, what they pair, and how the table
shows them (``vilasr_train.report``)."""

from __future__ import annotations

import json

import pytest
from vilasr_train.report import intervals, report_markdown, write_report


def rows(scores: dict[str, list[float]]) -> list[dict]:
    """Result rows: ``scores[sub_task]`` in item order."""
    return [{"id": f"{task}_{i}", "original_question_type": task, "score": s}
            for task, values in scores.items() for i, s in enumerate(values)]


def test_items_are_resampled_within_their_sub_task():
    # one right maze_a item, three wrong maze_b items: every draw keeps both sub-tasks, so the family
    # mean (the mean of its sub-tasks) is 0.5 in every draw; pooled resampling would spread it
    ci = intervals({"stage1": rows({"maze_a": [1.0], "maze_b": [0.0, 0.0, 0.0]})})
    assert ci["maze"]["stage1"] == {"low": 0.5, "high": 0.5, "change_low": 0.0, "change_high": 0.0}


def test_changes_are_paired_over_the_same_items():
    stage1 = rows({"maze_a": [1.0, 0.0, 1.0, 0.0, 1.0, 0.0], "object_x": [1.0, 1.0, 0.0, 0.0]})
    same = [dict(r) for r in stage1]
    better = [dict(r, score=1.0) if r["original_question_type"] == "maze_a" else dict(r) for r in stage1]
    ci = intervals({"stage1": stage1, "stage2": same, "stage3": better})
    maze = ci["maze"]
    assert maze["stage1"]["low"] < 0.5 < maze["stage1"]["high"]  # six items: a wide interval...
    assert (maze["stage2"]["change_low"], maze["stage2"]["change_high"]) == (0.0, 0.0)  # ...no change at all
    # stage 3 turns the three misses right: the change is the share of misses drawn, Binomial(6, 1/2) / 6,
    # whose 2.5% and 97.5% quantiles are 1/6 and 5/6
    assert (maze["stage3"]["change_low"], maze["stage3"]["change_high"]) == (pytest.approx(1 / 6), pytest.approx(5 / 6))
    assert ci["scene"]["stage3"]["change_low"] == ci["scene"]["stage3"]["change_high"] == 0.0


def test_items_not_answered_by_every_stage_are_left_out():
    stage1 = rows({"maze_a": [1.0, 0.0]})
    ci = intervals({"stage1": stage1, "stage2": stage1[:1]})
    assert ci["maze"]["stage1"] == {"low": 1.0, "high": 1.0, "change_low": 0.0, "change_high": 0.0}


def test_the_table_shows_intervals_and_paired_changes():
    def summary(maze, scene):
        return {"accuracy": {"maze_a": maze, "object_x": scene}, "n": {"maze_a": 6, "object_x": 4},
                "maze_mean": maze, "scene_mean": scene, "maze_chance_mean": 0.25, "scene_chance_mean": 0.25,
                "executable_drawing_turns": 1.0, "mean_turns": 2.0}

    ci = {"low": 0.1, "high": 0.4, "change_low": -0.2, "change_high": 0.05}
    report = {"chance": {"maze_a": 0.25, "object_x": 0.25}, "constant": {}, "pass_at_k": {},
              "stages": {"stage1": summary(0.5, 0.25), "stage3": summary(0.25, 0.5)},
              "intervals": {"maze": {"stage1": ci, "stage3": ci}}}
    table = report_markdown(report)
    assert "trained nothing" not in table
    passed = report_markdown(report | {"unchanged": {"stage2": "stage1"}})
    assert passed.startswith(table.rstrip("\n"))
    assert "\nstage2 trained nothing (it kept too few trajectories to fine-tune on): its model is stage1's, " \
           "unchanged.\n" in passed
    assert "| maze mean: 95% interval | | | | 10–40 | 10–40 |" in table
    assert "| maze: change from stage1 (paired 95% interval, points) | | | | — | -25.0 (-20 to +5) |" in table
    assert "scene mean: 95% interval" not in table  # no intervals given for it


def test_a_recipe_run_directory_gets_its_report(tmp_path):
    from vilasr_train.recipe import make_data

    data = tmp_path / "data"
    make_data({"model": {}, "data": {"train": {"maze": {"n": 3, "seed": 1, "sizes": [3]}},
                                     "heldout": {"maze": {"n": 3, "seed": 2, "sizes": [3]}}}}, data)
    items = json.loads((data / "heldout" / "maze" / "eval.json").read_text())
    for stage, right in (("stage1", 0), ("stage2", 1), ("stage3", 3)):  # items answered right, in order
        scored = [{"id": it["id"], "original_question_type": it["original_question_type"], "score": float(k < right)}
                  for k, it in enumerate(items)]
        (tmp_path / f"eval_{stage}").mkdir()
        (tmp_path / f"eval_{stage}" / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in scored))
        summary = {"accuracy": {r["original_question_type"]: r["score"] for r in scored},  # one item per sub-task
                   "n": {r["original_question_type"]: 1 for r in scored}, "executable_drawing_turns": 1.0,
                   "mean_turns": 3.0}
        (tmp_path / f"eval_{stage}" / "stage_summary.json").write_text(json.dumps(summary))
    report = write_report(tmp_path, ("stage1", "stage2", "stage3"), data)
    assert report["stages"]["stage3"]["maze_mean"] == 1.0 and report["stages"]["stage1"]["maze_mean"] == 0.0
    # one item per sub-task: every draw is the same items, so the intervals are points
    assert report["intervals"]["maze"]["stage3"] == {"low": 1.0, "high": 1.0, "change_low": 1.0, "change_high": 1.0}
    assert json.loads((tmp_path / "report.json").read_text())["intervals"] == report["intervals"]
    assert "| maze: change from stage1 (paired 95% interval, points) | | | | — | +33.3 (+33 to +33) | " \
           "+100.0 (+100 to +100) |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "report.png").stat().st_size > 0
