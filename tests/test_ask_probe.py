"""benchmarks/ask_probe.py (issue 13's diagnostic) at toy scale: it scores exactly the object names
of the answer turn, and a run writes its results per loss."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from benchmarks import ask_probe as probe  # noqa: E402
from ros_vilasr.core.models import EMBEDDED_DIR  # noqa: E402
from ros_vilasr.core.processor import load_processor  # noqa: E402
from ros_vilasr.synth.ask import ask_task  # noqa: E402


def test_the_names_scored_are_the_answer_turns_object_names():
    processor = load_processor(EMBEDDED_DIR)
    for index in range(6):  # scene and rig, every sub-task
        inputs, mask, names = probe.example(processor, 7, index)
        ids = inputs["input_ids"][0]
        task = ask_task(7, index)
        wanted = probe.NAME.findall(task.turns[0])  # the thought's names, then the answer's list
        at = names.nonzero().flatten().tolist()
        assert len(at) == len(wanted) and names.sum() <= mask.sum() and all(mask[i] for i in at)
        assert all(processor.tokenizer.decode(ids[i:i + 3]).strip().startswith(w) for i, w in zip(at, wanted))
        # with the room's images: the same turn after the image tokens, which the text-only prompt lacks
        pictured, pictured_mask, pictured_names = probe.example(processor, 7, index, images=True)
        assert "pixel_values" in pictured and "pixel_values" not in inputs
        pads = int(pictured["image_grid_thw"].prod(dim=1).sum()) // 4
        assert len(pictured["input_ids"][0]) > len(ids) and pictured_mask.sum() == mask.sum()
        assert pictured["input_ids"][0][pictured_names].tolist() == ids[names].tolist()
        assert sum(pictured["mm_token_type_ids"][0].tolist()) == pads


def test_a_run_writes_scores_per_loss(tmp_path):
    result = probe.main(["--steps", "2", "--every", "2", "--heldout", "4", "--out", str(tmp_path)])
    assert set(result["runs"]) == {"names", "turn"}
    for run in result["runs"].values():
        assert np.array(run["curve"]).shape == (2, 2) and len(run["scores"]) == 1 and 0 <= run["final"] <= 1
    # same model, same first batch; the loss each descends on makes the second step differ
    names, turn = result["runs"]["names"]["curve"], result["runs"]["turn"]["curve"]
    assert names[0] == pytest.approx(turn[0]) and names[1] != pytest.approx(turn[1])
    saved = json.loads((tmp_path / "ask_probe.json").read_text())
    assert saved["runs"]["turn"]["scores"] == [list(s) for s in result["runs"]["turn"]["scores"]]
    assert "| names |" in (tmp_path / "ask_probe.md").read_text() and (tmp_path / "ask_probe.png").stat().st_size
