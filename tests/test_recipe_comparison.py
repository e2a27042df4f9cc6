"""benchmarks/recipe_comparison.py counts the maze cells a model names in its first thought against
the ground truth: the oracle's own dialogues name every cell right; a wrong cell is not counted. An
answer in another form than its question asks (a number for a letter) is counted, and whether an
answer is the option its own last thought names, and whether a scene dialogue's first thought names
the objects its question asks about."""

from __future__ import annotations

import json

from benchmarks.recipe_comparison import (
    named_cells,
    own_option,
    question_objects,
    stage_row,
    thought_agreement,
    wrong_form,
    wrong_forms,
)
from ros_vilasr.core.engines.replay import ReplayEngine, read_transcripts
from ros_vilasr.evaluation.benchmarks import load_benchmark
from ros_vilasr.evaluation.runner import run_evaluation
from ros_vilasr.synth import maze
from ros_vilasr.synth.ask import ask_tasks
from ros_vilasr.synth.rig_tasks import rig_task
from ros_vilasr.synth.trajectories import write_dataset

PREFIX = "<think>The green start S is at row "


def test_cells_named_in_the_first_thought_are_checked_against_the_maze(tmp_path):
    data = tmp_path / "data" / "heldout" / "maze"
    write_dataset((maze.maze_task(5, i, sizes=(3,)) for i in range(4)), data)
    transcripts = read_transcripts(data / "trajectories.json")
    first = transcripts[0]["conversations"][2]["content"]  # system, user, then the oracle's first turn
    row = first[len(PREFIX)]
    wrong_s = first.replace(PREFIX + row, PREFIX + ("1" if row != "1" else "2"), 1)  # S one row off
    assert first.startswith(PREFIX) and wrong_s != first
    transcripts[0]["conversations"][2]["content"] = wrong_s
    run_evaluation(load_benchmark(data / "eval.json", benchmark="maze"), ReplayEngine(transcripts),
                   tmp_path / "eval_stage1", "maze", progress=False, plots=False)
    counts = named_cells(tmp_path, "stage1")
    assert counts["n"] == 4 and counts["G"] == 4 and counts["S"] == 3
    assert 1 <= counts["S_constant"] <= 4 and 1 <= counts["G_constant"] <= 4
    assert stage_row(tmp_path, "stage2") is None  # a stage that was not evaluated


def test_a_stage_row_reads_the_summary_and_the_models_layout(tmp_path):
    (tmp_path / "init").mkdir()
    (tmp_path / "init" / "vilasr_model.json").write_text('{"image_position": "last"}')
    (tmp_path / "eval_stage1").mkdir()
    summary = {"accuracy": {"maze_turn_count": 0.5, "maze_path_length": 0.25, "rig_side": 1.0,
                            "look_maze_ends": 0.75, "ask_question_objects": 0.25}, "executable_drawing_turns": 0.9}
    (tmp_path / "eval_stage1" / "stage_summary.json").write_text(json.dumps(summary))
    (tmp_path / "eval_stage1" / "results.jsonl").write_text("")
    (tmp_path / "data" / "heldout" / "maze").mkdir(parents=True)
    (tmp_path / "data" / "heldout" / "maze" / "eval.json").write_text(
        json.dumps([{"id": "m", "ground_truth": {"start": [0, 0], "goal": [1, 1]}}]))
    row = stage_row(tmp_path, "stage1")
    # one-turn pretraining questions are in neither mean
    assert (row["maze"], row["scene"], row["one_turn"], row["executable"]) == (0.375, 1.0, 0.5, 0.9)
    assert row["image_position"] == "last" and row["cells"]["n"] == 0


def test_an_answer_in_another_form_than_asked_is_counted():
    mc = {"options": ["A. 4", "B. 5", "C. 3", "D. 6"], "problem_type": "multiple choice"}
    number = {"options": None, "problem_type": "numerical"}
    assert [wrong_form(mc | {"prediction": p}) for p in ("D", " B ", "6", "E", "", None)] == [
        False, False, True, True, True, True]
    assert [wrong_form(number | {"prediction": p}) for p in ("13", "1,024", "-2.5", "A", "13 cells", None)] == [
        False, False, False, True, True, True]
    assert not wrong_form({"options": None, "problem_type": "free-form", "prediction": "left of the door"})


def test_an_answer_is_checked_against_the_option_its_last_thought_names(tmp_path):
    def row(last, prediction, options=("A. 4", "B. 5"), answer="B"):
        return {"options": list(options or []), "prediction": prediction, "answer": answer,
                "original_question_type": "maze_turn_count",
                "conversations": [{"role": "assistant", "content": "<think>S is at row 1, option A.</think>"},
                                  {"role": "user", "content": "<image>"},
                                  {"role": "assistant", "content": last}]}
    said = "<think>That is 5 runs, option B.</think>\nAction: Answer\n<answer>B</answer>"
    moves = "<think>The option listing these moves is A.</think>"
    assert own_option(row(said, "B")) == ("B", "B") and own_option(row(said, " A ")) == ("B", "A")
    assert own_option(row(moves, "A")) == ("A", "A")
    assert own_option(row("<think>I count 5 runs.</think>", "B")) is None  # names no option
    assert own_option(row("<answer>B</answer>", "B")) is None  # no thought at all
    assert own_option(row(said, "5", options=None, answer="5")) is None  # not multiple choice
    # four name an option: B, B, A, A; answered B, A, A, A -> 3 agree; independent: (1+1+3+3)/4 = 2
    (tmp_path / "eval_stage1").mkdir()
    rows = [row(said, "B"), row(said, "A"), row(moves, "A"), row(moves, "A", answer="A"),
            row("<think>I count 5 runs.</think>", "B")]
    (tmp_path / "eval_stage1" / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    counts = thought_agreement(tmp_path, "stage1") | wrong_forms(tmp_path, "stage1")
    assert (counts["thought_named"], counts["answer_is_thought"], counts["thought_right"]) == (4, 3, 3)
    assert counts["answer_is_thought_independent"] == 2 and counts["maze_n"] == 5


def test_the_question_objects_named_in_the_first_thought_are_the_oracles(tmp_path):
    data = tmp_path / "data" / "heldout" / "rig"
    write_dataset((rig_task(7, i) for i in range(3)), data)  # side, nearest, floor count
    transcripts = read_transcripts(data / "trajectories.json")
    first = transcripts[1]["conversations"][2]["content"]  # the nearest question's first turn
    asked = first.split("<think>I locate the ", 1)[1].split(" ", 1)[0]
    other = "lamp" if asked != "lamp" else "sofa"
    transcripts[1]["conversations"][2]["content"] = first.replace(f"the {asked}", f"the {other}", 1)
    asks = tmp_path / "data" / "heldout" / "ask"  # one-turn pretraining questions: not dialogues
    write_dataset(ask_tasks(2, seed=7), asks)
    items = load_benchmark(data / "eval.json", benchmark="rig") + load_benchmark(asks / "eval.json", benchmark="ask")
    run_evaluation(items, ReplayEngine(transcripts + read_transcripts(asks / "trajectories.json")),
                   tmp_path / "eval_stage1", "rig", progress=False, plots=False)
    # the floor count's first thought names no object: not counted; the changed one names another
    assert question_objects(tmp_path, "stage1") == {"n": 2, "named": 1}
