"""Loader tests for the ViLaSR evaluation files (spec section 8)."""

import json
import os

import pytest

from ros_vilasr.core.aggregates import aggregate
from ros_vilasr.evaluation.benchmarks import (
    EvalItem,
    infer_benchmark,
    load_benchmark,
    read_results_jsonl,
    score_rows,
)


def _write(tmp_path, name, data):
    p = tmp_path / name
    p.write_text(json.dumps(data), encoding="utf-8")
    return p


MAZE_ITEM = {
    "question": "Find the path from S to E.",
    "options": ["A. up", "B. down", "C. left", "D. right"],
    "problem_type": "multiple choice",
    "answer": "B",
    "image_path": "maze/images/0001.png",  # the original stores one string here
    "data_type": "single_view",
    "original_question_type": "maze_nav",
    "grid_size": 5,
}


def test_maze_single_image(tmp_path):
    p = _write(tmp_path, "maze.json", [MAZE_ITEM, dict(MAZE_ITEM, answer="C", grid_size=6)])
    root = tmp_path / "imgs"
    items = load_benchmark(p, root)
    assert len(items) == 2
    it = items[0]
    assert isinstance(it, EvalItem)
    assert it.benchmark == "maze"
    assert it.id == "0" and items[1].id == "1"
    assert it.kind == "single"
    assert it.image_paths == [os.path.join(str(root), "maze", "images", "0001.png")]
    assert os.path.isabs(it.image_paths[0])
    assert it.options == MAZE_ITEM["options"]
    assert it.problem_type == "multiple choice"
    assert it.grid_size == 5 and items[1].grid_size == 6
    assert it.sub_task == "maze_nav"
    assert it.answer == "B"


def test_spatialeval_real(tmp_path):
    item = {
        "question": "Is the cup left of the plate?",
        "options": ["A. yes", "B. no"],
        "problem_type": "multiple choice",
        "answer": "A",
        "image_path": ["spatialeval/real/12.jpg"],
    }
    p = _write(tmp_path, "SpatialEval_spatialreal.json", [item])
    items = load_benchmark(p, tmp_path)
    assert items[0].benchmark == "spatialeval_real"
    assert items[0].kind == "single"
    assert items[0].data_type is None and items[0].grid_size is None and items[0].sub_task is None


def test_vsi_bench_video(tmp_path):
    frames = [f"vsi/scene0/frame_{i:02d}.jpg" for i in range(16)]
    items = [
        {
            "question": "How many chairs are in the room?",
            "problem_type": "numerical",
            "answer": 4,  # numbers are kept as strings
            "image_path": frames,
            "original_question_type": "object_counting",
        },
        {
            "question": "If I stand by the sofa facing the tv, is the lamp to my left or right?",
            "options": ["A. left", "B. right"],
            "problem_type": "multiple choice",
            "answer": "A",
            "image_path": frames,
            "data_type": "multi_view",
            "original_question_type": "object_rel_direction_easy",
        },
        {
            "question": "What is the size of the room (in square meters)?",
            "problem_type": "regression",
            "answer": "23.5",
            "image_path": frames,
            "original_question_type": "room_size_estimation",
        },
    ]
    p = _write(tmp_path, "vsi_bench.json", items)
    loaded = load_benchmark(p, "/data/bench")
    assert [it.kind for it in loaded] == ["video", "video", "video"]  # VSI frames are video
    assert loaded[0].answer == "4"
    assert len(loaded[0].image_paths) == 16
    assert loaded[0].image_paths[3] == "/data/bench/vsi/scene0/frame_03.jpg"
    assert loaded[0].options is None
    assert loaded[1].sub_task == "object_rel_direction_easy"


def test_spar_bench_single_and_multi_view(tmp_path):
    items = [
        {
            "question": "How far is the chair from the camera? A. 1m B. 2m",
            "options": None,  # SPAR puts options in the question
            "problem_type": "regression",
            "answer": "2.1",
            "image_path": ["spar/a.jpg"],
            "data_type": "single_view",
            "original_question_type": "depth_prediction_oc",
        },
        {
            "question": "How did the camera move between the views?",
            "problem_type": "vci",
            "answer": "move_right:0.3,rotate_left:15",
            "image_path": ["spar/b1.jpg", "spar/b2.jpg"],
            "data_type": "multi_view",
            "original_question_type": "view_change_infer",
        },
    ]
    p = _write(tmp_path, "spar_bench.json", items)
    loaded = load_benchmark(p, tmp_path)
    assert [it.kind for it in loaded] == ["single", "views"]
    assert loaded[1].problem_type == "vci"
    assert all(it.benchmark == "spar_bench" for it in loaded)


def test_mmsi_with_ids_and_explicit_benchmark(tmp_path):
    items = [
        {
            "id": "q-17",
            "question": "q",
            "problem_type": "Multiple Choice",
            "answer": "A",
            "image_path": ["x.png", "y.png"],
            "data_type": "multi_view",
        },
        {
            "id": 18,
            "question": "q",
            "problem_type": "multiple choice",
            "answer": "B",
            "image_path": ["/abs/z.png"],
        },
    ]
    p = _write(tmp_path, "some_eval_file.json", items)
    loaded = load_benchmark(p, tmp_path / "root", benchmark="MMSI")
    assert [it.id for it in loaded] == ["q-17", "18"]
    assert loaded[0].benchmark == "mmsi_bench"
    assert loaded[0].problem_type == "multiple choice"  # normalised
    assert loaded[0].kind == "views"
    assert loaded[1].image_paths == ["/abs/z.png"]  # absolute paths kept


def test_images_root_defaults_to_file_folder(tmp_path):
    p = _write(tmp_path, "maze.json", [MAZE_ITEM])
    it = load_benchmark(p)[0]
    assert it.image_paths == [str(tmp_path / "maze" / "images" / "0001.png")]


def test_missing_image_files_not_checked(tmp_path):
    p = _write(tmp_path, "maze.json", [MAZE_ITEM])
    it = load_benchmark(p, tmp_path / "does-not-exist")[0]
    assert not os.path.exists(it.image_paths[0])


def test_jsonl_input(tmp_path):
    p = tmp_path / "mmsi_bench.jsonl"
    p.write_text("\n".join(json.dumps(dict(MAZE_ITEM, grid_size=None)) for _ in range(3)) + "\n\n")
    loaded = load_benchmark(p, tmp_path)
    assert len(loaded) == 3 and loaded[2].id == "2" and loaded[0].benchmark == "mmsi_bench"


@pytest.mark.parametrize(
    "filename, expected",
    [
        ("vsi_bench.json", "vsi_bench"),
        ("VSIBench.json", "vsi_bench"),
        ("maze.json", "maze"),
        ("SpatialEval_spatialreal.json", "spatialeval_real"),
        ("spar_bench.json", "spar_bench"),
        ("spar_bench_tiny.json", "spar_bench"),
        ("mmsi_bench.json", "mmsi_bench"),
        ("my-vsi-subset.jsonl", "vsi_bench"),
    ],
)
def test_infer_benchmark(filename, expected):
    assert infer_benchmark(filename) == expected


@pytest.mark.parametrize("filename", ["questions.json", "sparse.json", "SpatialEval_mazenav.json"])
def test_infer_benchmark_fails_clearly(filename, tmp_path):
    with pytest.raises(ValueError, match="benchmark"):
        infer_benchmark(filename)


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d.pop("question"), "question"),
        (lambda d: d.update(question=3), "question"),
        (lambda d: d.pop("answer"), "answer"),
        (lambda d: d.update(answer=None), "answer"),
        (lambda d: d.update(answer=["A"]), "answer"),
        (lambda d: d.update(problem_type="ocr"), "problem_type"),
        (lambda d: d.pop("problem_type"), "problem_type"),
        (lambda d: d.pop("image_path"), "image_path"),
        (lambda d: d.update(image_path=[]), "image_path"),
        (lambda d: d.update(image_path=["ok.png", 3]), "image_path"),
        (lambda d: d.update(options="A. up"), "options"),
        (lambda d: d.update(grid_size="five"), "grid_size"),
        (lambda d: d.update(grid_size=True), "grid_size"),
        (lambda d: d.update(original_question_type=5), "original_question_type"),
        (lambda d: d.update(data_type=["single_view"]), "data_type"),
    ],
)
def test_broken_item_names_index_and_field(tmp_path, mutate, field):
    bad = dict(MAZE_ITEM)
    mutate(bad)
    p = _write(tmp_path, "maze.json", [MAZE_ITEM, MAZE_ITEM, bad])
    with pytest.raises(ValueError) as ei:
        load_benchmark(p, tmp_path)
    msg = str(ei.value)
    assert "item 2" in msg and f"'{field}'" in msg


def test_broken_file_structure(tmp_path):
    p = _write(tmp_path, "maze.json", {"items": [MAZE_ITEM]})
    with pytest.raises(ValueError, match="list"):
        load_benchmark(p, tmp_path)
    p = _write(tmp_path, "maze.json", [MAZE_ITEM, "not an object"])
    with pytest.raises(ValueError, match="item 1"):
        load_benchmark(p, tmp_path)
    p = tmp_path / "maze.json"
    p.write_text("[{", encoding="utf-8")
    with pytest.raises(ValueError, match="invalid JSON"):
        load_benchmark(p, tmp_path)


def test_duplicate_ids_rejected(tmp_path):
    p = _write(tmp_path, "maze.json", [dict(MAZE_ITEM, id="a"), dict(MAZE_ITEM, id="a")])
    with pytest.raises(ValueError, match="item 1.*'id'.*duplicate"):
        load_benchmark(p, tmp_path)


def test_grid_size_coercion(tmp_path):
    p = _write(tmp_path, "maze.json", [dict(MAZE_ITEM, grid_size=7.0), dict(MAZE_ITEM, grid_size="4")])
    assert [it.grid_size for it in load_benchmark(p, tmp_path)] == [7, 4]


# --------------------------------------------------------------------------- #
# results.jsonl of the original evaluation
# --------------------------------------------------------------------------- #


def _results_file(tmp_path, records, tail=""):
    p = tmp_path / "results.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in records) + tail, encoding="utf-8")
    return p


def test_read_results_jsonl_and_score(tmp_path):
    records = [
        {
            "question": "q",
            "answer": "B",
            "problem_type": "multiple choice",
            "original_question_type": "object_rel_direction_hard",
            "model_output": "<think>look</think> Action: Answer\n<answer> B. left </answer>",
        },
        {
            "answer": "7",
            "problem_type": "regression",
            "model_output": "<answer>about 7 m</answer>",
            "original_question_type": "room_size_estimation",
        },
        {
            "answer": "3",
            "problem_type": "numerical",
            "model_output": "3",
            "original_question_type": "object_counting",
        },
        {"answer": "C", "problem_type": "multiple choice", "model_output": None},
        {"answer": "C", "problem_type": "weird", "model_output": "C"},
    ]
    rows = read_results_jsonl(_results_file(tmp_path, records))
    assert [r["line"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0]["prediction"] == "B. left"
    assert rows[1]["prediction"] == "about 7 m"
    assert rows[2]["prediction"] == "3"  # no tags: whole text
    assert rows[3]["model_output"] == "" and rows[3]["prediction"] == ""
    assert rows[3]["original_question_type"] is None
    scored = score_rows(rows)
    assert [r["score"] for r in scored] == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert "score_error" in scored[4] and "score" not in rows[0]
    summary = aggregate("vsi_bench", scored[:3])
    assert summary["per_task"] == {"rel_direction": 1.0, "counting": 1.0, "room_size": 0.0}


def test_read_results_truncated_last_line_skipped(tmp_path):
    rec = {"answer": "A", "problem_type": "multiple choice", "model_output": "A"}
    rows = read_results_jsonl(_results_file(tmp_path, [rec, rec], tail='{"answer": "A", "model_'))
    assert len(rows) == 2


def test_read_results_broken_middle_line_raises(tmp_path):
    p = tmp_path / "results.jsonl"
    p.write_text('{"answer": "A"}\nnot json\n{"answer": "B"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 2"):
        read_results_jsonl(p)
