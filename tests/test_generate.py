"""``vilasr-train generate``: a teacher behind an OpenAI-compatible endpoint (the project's fake
server, scripted per question — a test double: no 72B teacher can run here) reasons by drawing;
exactly the trajectories that pass every filter are kept, each rejection is counted under its
rule, the kept file trains with ``vilasr-train sft`` unchanged, and a killed run resumes with every
question answered exactly once."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from fake_chat_server import FakeChatServer
from PIL import Image, ImageDraw
from sft_helpers import killed_after_first_line
from vilasr_train import cli, reflect

from ros_vilasr.core.tiny_model import build_tiny_model

DRAW = ('<think>Mark the cup.</think>\nAction: Object Mapper\n```json\n'
        '[{"index": 1, "bbox_2d": [28, 28, 84, 84], "label": "cup"}]\n```')
BAD_DRAW = DRAW.replace('"index": 1', '"index": 7')  # an image that does not exist


def answer(text: str) -> str:
    return f"<think>Done.</think>\nAction: Answer\n<answer>{text}</answer>"


# what the teacher does for each kind of question: its turns, in order
SCRIPTS = {
    "good": [DRAW, answer("A")],
    "unexecutable": [BAD_DRAW, answer("A")],
    "unparsable": [DRAW, "<think>Done.</think>\nAction: Answer\n<answer>A"],
    "wrong": [DRAW, answer("B")],
    "short": [answer("A")],
    "rambling": [DRAW] * 20,
}
KINDS = [*SCRIPTS, "good", "down"]  # "down": the endpoint fails for this question


def teacher(body: dict):
    question = next(m for m in body["messages"] if m["role"] == "user")["content"]
    text = next(p["text"] for p in question if p["type"] == "text") if isinstance(question, list) else question
    kind = text.split("[")[1].split("]")[0]
    if kind == "down":
        return 503
    turn = sum(m["role"] == "assistant" for m in body["messages"])
    script = SCRIPTS[kind]
    return script[min(turn, len(script) - 1)], "stop", 12


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("generate")
    image = Image.new("RGB", (224, 168), "white")
    ImageDraw.Draw(image).rectangle((30, 30, 80, 80), fill="red")
    (root / "scenes").mkdir()
    image.save(root / "scenes" / "scene.png")
    records = [{"question": f"[{kind}] Is the cup on the left or the right?", "options": ["A. left", "B. right"],
                "answer": "A", "problem_type": "multiple choice", "image_path": "scene.png",
                "data_type": "single_view"} for kind in KINDS]
    (root / "questions.json").write_text(json.dumps(records))
    (root / "many.json").write_text(json.dumps([r | {"question": f"{r['question']} ({i})"}
                                                for i in range(4) for r in records if "[good]" in r["question"]]))
    return root


@pytest.fixture(scope="module")
def server():
    server = FakeChatServer(teacher)
    yield server
    server.close()


def args(root: Path, server, out: Path, *flags: str, data: str = "questions.json") -> list[str]:
    return ["generate", "--data", str(root / data), "--images-root", str(root / "scenes"),
            "--base-url", server.base_url, "--model", "teacher-72b", "--out", str(out),
            "--set", "retries=1", "--set", "backoff_s=0.01", *flags]


def test_exactly_the_good_trajectories_are_kept_and_every_rejection_is_counted(root, server, tmp_path, capsys):
    out = tmp_path / "gen"
    assert cli.main(args(root, server, out, "--samples", "2", "--min-rounds", "2", "--concurrency", "4")) == 0
    report = json.loads((out / "report.json").read_text())
    data = json.loads((out / "trajectories.json").read_text())
    assert report["rejected"] == {"endpoint_failed": 2, "not_executable": 2, "unfinished": 2, "unparsable": 2,
                                  "wrong": 2, "too_short": 2}
    counts = report["kept"], report["sampled"], report["questions_answered"], report["questions_failed"]
    assert counts == (4, 16, 8, 1)
    assert all(report["examples"][rule][0]["question"].endswith(f"#{KINDS.index(kind)}") for rule, kind in [
        ("not_executable", "unexecutable"), ("unparsable", "unparsable"), ("wrong", "wrong"), ("too_short", "short"),
        ("unfinished", "rambling"), ("endpoint_failed", "down")])
    assert "HTTP 503" in report["examples"]["endpoint_failed"][0]["error"]
    assert [r["id"].split("#")[1] for r in data] == ["0@0", "0@1", "6@0", "6@1"]  # the two [good] questions
    for record in data:  # paths relative to OUT, every image there: the folder moves as a whole
        assert all(not Path(p).is_absolute() and (out / p).is_file() for p in record["images"])
        assert len(record["images"]) == 2 and record["conversations"][-1]["content"] == answer("A")
    assert "kept 4 of 16 trajectories" in capsys.readouterr().out
    assert {r["model"] for r in server.requests} == {"teacher-72b"}

    # the kept file is stage-1 data as it stands
    tiny = build_tiny_model(tmp_path / "tiny")
    sft_out = tmp_path / "sft"
    assert cli.main(["sft", "--config", "sft_cpu_toy", "--model", str(tiny), "--data", str(out / "trajectories.json"),
                     "--out", str(sft_out), "--set", "max_steps=1", "--set", "report_to=none"]) == 0
    assert json.loads((sft_out / "data_report.json").read_text())["kept"] == 4


def test_a_killed_run_resumes_with_every_question_answered_once(root, tmp_path):
    slow = threading.Event()

    def slowly(body):
        if not slow.is_set():
            time.sleep(0.3)
        return teacher(body)

    server = FakeChatServer(slowly)
    out = tmp_path / "gen"
    argv = args(root, server, out, "--concurrency", "1", data="many.json")
    samples = out / "samples-shard0of1.jsonl"
    try:
        before = killed_after_first_line(argv, samples)
        assert 1 <= before < 8, "the run finished before it was killed"
        slow.set()
        assert cli.main(argv) == 0
    finally:
        server.close()
    sources = Counter(q["source"] for path in reflect.sample_files(out) for q in reflect.read_samples(path))
    assert sources == Counter({f"{root / 'many.json'}#{n}": 1 for n in range(8)})
    data = json.loads((out / "trajectories.json").read_text())
    assert sorted(r["id"] for r in data) == sorted(f"{root / 'many.json'}#{n}@0" for n in range(8))


def test_bad_input_is_one_clear_line(root, server, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(args(root, server, tmp_path / "x", data="missing.json"))
    assert exit_.value.code == 2 and "missing.json not found" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
