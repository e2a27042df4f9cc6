"""`vilasr eval` and `vilasr score`: the replay engine reproduces the oracle's score on synthetic
items, a killed run resumes with every item exactly once, plots are PNGs, original-format results
files score."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from ros_vilasr.cli import main
from ros_vilasr.core.engines.replay import ReplayEngine, read_transcripts
from ros_vilasr.core.images import VIDEO_FRAMES, evenly_spaced
from ros_vilasr.evaluation.benchmarks import load_benchmark
from ros_vilasr.evaluation.runner import RESULTS_FILE, run_evaluation

REPO = Path(__file__).resolve().parents[1]
ORIGINAL_FIELDS = {"id", "model_output", "answer", "problem_type", "original_question_type", "prediction",
                   "score", "finish_reason", "calls", "images", "conversations"}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A small synthetic maze set and a scene set (videos included)."""
    out = tmp_path_factory.mktemp("synth")
    main(["synth", "maze", "--n", "12", "--seed", "5", "--out", str(out / "maze"), "--reflective-share", "0.5"])
    main(["synth", "scene", "--n", "5", "--seed", "5", "--out", str(out / "scene")])
    return out


def results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / RESULTS_FILE).read_text().splitlines()]


def ids_once(rows, items):
    return sorted(r["id"] for r in rows) == sorted(i.id for i in items)


@pytest.mark.parametrize("task", ["maze", "scene"])
def test_replay_eval_reproduces_the_oracle_score(task, synthetic, tmp_path, capsys):
    data = synthetic / task
    main(["eval", "--benchmark", str(data / "eval.json"), "--engine", "replay",
          "--model", str(data / "trajectories.json"), "--out", str(tmp_path), "--batch-size", "4"])
    table = capsys.readouterr().out
    assert "overall" in table and "100.0" in table
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["overall"] == 1.0 and summary["finish_reasons"] == {"answer": summary["n"]}
    rows = results(tmp_path)
    assert len(rows) == summary["n"] == len(json.loads((data / "eval.json").read_text()))
    for row in rows:
        assert set(row) >= ORIGINAL_FIELDS
        assert row["model_output"] == row["conversations"][-1]["content"]
    trajectories = {t["id"]: t for t in read_transcripts(data / "trajectories.json")}
    assert all(r["conversations"] == trajectories[r["id"]]["conversations"] for r in rows)
    for name in ("scores", "calls", "images", "finish_reasons"):
        with Image.open(tmp_path / f"{name}.png") as png:
            assert png.format == "PNG"
            png.verify()


def test_synthetic_data_and_evaluation_share_a_models_image_last_layout(tmp_path, capsys):
    main(["synth", "rig", "--n", "3", "--seed", "5", "--out", str(tmp_path / "rig"), "--image-position", "last"])
    main(["eval", "--benchmark", str(tmp_path / "rig" / "eval.json"), "--engine", "replay", "--model",
          str(tmp_path / "rig" / "trajectories.json"), "--out", str(tmp_path / "eval"), "--image-position", "last"])
    trajectories = {t["id"]: t for t in read_transcripts(tmp_path / "rig" / "trajectories.json")}
    rows = results(tmp_path / "eval")
    assert len(rows) == 3 and all(r["conversations"] == trajectories[r["id"]]["conversations"] for r in rows)
    cameras = {i["id"]: len(i["image_path"]) for i in json.loads((tmp_path / "rig" / "eval.json").read_text())}
    assert sorted(cameras.values()) == [1, 2, 2]
    for row in rows:  # every camera view after the question
        question, *images = row["conversations"][1]["content"].split("<image>")
        assert row["question"] in question and len(images) == cameras[row["id"]]


class Interrupting(ReplayEngine):
    """Raises KeyboardInterrupt (a user's Ctrl-C) on the given engine call."""

    def __init__(self, transcripts, at_call: int):
        super().__init__(transcripts)
        self.calls, self.at_call = 0, at_call

    def generate(self, requests, cancel=None):
        self.calls += 1
        if self.calls == self.at_call:
            raise KeyboardInterrupt
        return super().generate(requests, cancel)


def test_interrupted_eval_resumes_with_every_item_once(synthetic, tmp_path):
    data = synthetic / "maze"
    items = load_benchmark(data / "eval.json", benchmark="maze")
    transcripts = read_transcripts(data / "trajectories.json")
    with pytest.raises(KeyboardInterrupt):
        run_evaluation(items, Interrupting(transcripts, at_call=9), tmp_path, "maze", batch_size=3,
                       progress=False, plots=False)
    before = results(tmp_path)
    assert 0 < len(before) < len(items)
    summary = run_evaluation(items, ReplayEngine(transcripts), tmp_path, "maze", batch_size=3, progress=False,
                             plots=False)
    rows = results(tmp_path)
    assert rows[:len(before)] == before  # finished items are kept, not redone
    assert ids_once(rows, items) and summary["n"] == len(items) and summary["overall"] == 1.0


def test_truncated_last_line_is_cut_off_and_redone(synthetic, tmp_path):
    data = synthetic / "maze"
    items = load_benchmark(data / "eval.json", benchmark="maze")
    transcripts = read_transcripts(data / "trajectories.json")
    run_evaluation(items[:4], ReplayEngine(transcripts), tmp_path, "maze", progress=False, plots=False)
    text = (tmp_path / RESULTS_FILE).read_text()
    lines = text.splitlines(keepends=True)
    (tmp_path / RESULTS_FILE).write_text("".join(lines[:3]) + lines[3][:40])  # killed mid-write
    summary = run_evaluation(items, ReplayEngine(transcripts), tmp_path, "maze", progress=False, plots=False)
    assert ids_once(results(tmp_path), items) and summary["overall"] == 1.0


def test_broken_line_in_the_middle_is_an_error(synthetic, tmp_path):
    (tmp_path / RESULTS_FILE).write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    items = load_benchmark(synthetic / "maze" / "eval.json", benchmark="maze")
    with pytest.raises(ValueError, match="line 2"):
        run_evaluation(items, ReplayEngine([{"conversations": []}]), tmp_path, "maze", progress=False)


SLOW_EVAL = """
import sys, time
from ros_vilasr.core.engines.replay import ReplayEngine, read_transcripts
from ros_vilasr.evaluation.benchmarks import load_benchmark
from ros_vilasr.evaluation.runner import run_evaluation

class Slow(ReplayEngine):
    def generate(self, requests, cancel=None):
        time.sleep(0.15)
        return super().generate(requests, cancel)

data, out = sys.argv[1], sys.argv[2]
items = load_benchmark(data + "/eval.json", benchmark="maze")
run_evaluation(items, Slow(read_transcripts(data + "/trajectories.json")), out, "maze", batch_size=1,
               progress=False, plots=False)
"""


def test_killed_process_resumes_with_every_item_once(synthetic, tmp_path):
    """SIGKILL at an arbitrary moment (possibly mid-write), then the same command again."""
    data = synthetic / "maze"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", SLOW_EVAL, str(data), str(tmp_path)], env=env)
    results_file = tmp_path / RESULTS_FILE
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if results_file.exists() and results_file.read_text().count("\n") >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    items = load_benchmark(data / "eval.json", benchmark="maze")
    killed_with = results_file.read_text().count("\n")
    assert 3 <= killed_with < len(items)
    summary = run_evaluation(items, ReplayEngine(read_transcripts(data / "trajectories.json")), tmp_path, "maze",
                             progress=False, plots=False)
    assert ids_once(results(tmp_path), items) and summary["overall"] == 1.0


def test_unreadable_images_are_skipped_and_retried(synthetic, tmp_path):
    data = synthetic / "maze"
    items = load_benchmark(data / "eval.json", benchmark="maze")[:3]
    transcripts = read_transcripts(data / "trajectories.json")
    items[1].image_paths = [str(tmp_path / "missing.png")]
    summary = run_evaluation(items, ReplayEngine(transcripts), tmp_path / "out", "maze", progress=False,
                             plots=False)
    assert summary["unreadable"] == [items[1].id] and summary["n"] == 2
    items[1].image_paths = [str(data / "images" / f"{items[1].id}_1.png")]
    summary = run_evaluation(items, ReplayEngine(transcripts), tmp_path / "out", "maze", progress=False,
                             plots=False)
    assert summary["unreadable"] == [] and ids_once(results(tmp_path / "out"), items)


def test_video_items_see_16_uniform_frames():
    frames = [f"f{i:02d}.png" for i in range(40)]
    picked = evenly_spaced(frames, VIDEO_FRAMES)
    assert len(picked) == 16 and picked[0] == "f00.png" and picked[-1] == "f39.png"
    assert picked == sorted(set(picked))
    assert evenly_spaced(frames[:8], VIDEO_FRAMES) == frames[:8]


def test_score_an_original_results_file(tmp_path, capsys):
    """The original evaluation's results.jsonl: model_output, answer, problem_type per line; no ids."""
    lines = [
        {"model_output": "<think>x</think>\nAction: Answer\n<answer>B</answer>", "answer": "B",
         "problem_type": "multiple choice", "original_question_type": "object_rel_direction_easy"},
        {"model_output": "<answer>A</answer>", "answer": "C", "problem_type": "multiple choice",
         "original_question_type": "object_rel_direction_hard"},
        {"model_output": "<answer>4</answer>", "answer": "4", "problem_type": "regression",
         "original_question_type": "object_counting"},
        {"model_output": "", "answer": "2.5", "problem_type": "regression",
         "original_question_type": "object_abs_distance"},
    ]
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"model_output": "<ans')  # truncated tail
    main(["score", str(path), "--benchmark", "vsi_bench"])
    table = capsys.readouterr().out
    rows = {r.split()[0]: r.split()[-1] for r in table.splitlines()[3:] if r and not r.startswith("-")}
    assert rows["rel_direction"] == "50.0" and rows["counting"] == "100.0" and rows["abs_distance"] == "0.0"
    assert rows["overall"] == "50.0"  # mean of the three task means present
    assert "missing (not in overall)" in table
