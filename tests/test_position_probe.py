"""benchmarks/position_probe.py (issue 13's diagnostic) at toy scale: its task's answers are the
square's real centre, its floor is the answer digits' entropy, and a run writes its results."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

pytest.importorskip("torch")

from benchmarks import position_probe as probe  # noqa: E402
from ros_vilasr.core.models import EMBEDDED_DIR  # noqa: E402
from ros_vilasr.core.processor import load_processor  # noqa: E402


def test_the_answer_is_the_square_centre_and_the_floor_is_the_digit_entropy():
    processor = load_processor(EMBEDDED_DIR, max_pixels=probe.SIZE ** 2)
    rng = random.Random(3)
    state = rng.getstate()
    encoding = probe.example(processor, rng)
    rng.setstate(state)
    x = rng.randint(probe.LOW, probe.HIGH)
    answer = processor.tokenizer.decode([t for t, m in zip(encoding.input_ids, encoding.loss_mask) if m])
    assert answer.startswith(f"x = {x:03d}")
    hundreds = [80 / 185, 100 / 185, 5 / 185]  # centres 20-99, 100-199, 200-204
    assert probe.marginal_nll()[0] == pytest.approx(-sum(p * math.log(p) for p in hundreds))
    assert probe.marginal_nll()[2] == pytest.approx(math.log(10), abs=0.01)


def test_a_run_writes_curves_per_theta(tmp_path):
    result = probe.main(["--steps", "2", "--thetas", "1e6@0,2,14", "20", "--out", str(tmp_path)])
    assert set(result["runs"]) == {"1e+06 @ [0, 2, 14]", "20 @ [4, 6, 6]"}
    for run in result["runs"].values():
        assert np.array(run["curve"]).shape == (2, 3) and all(v > 0 for v in run["final"])
    saved = json.loads((tmp_path / "position_probe.json").read_text())
    assert saved["runs"]["20 @ [4, 6, 6]"]["curve"] == result["runs"]["20 @ [4, 6, 6]"]["curve"]
    assert "| not looking |" in (tmp_path / "position_probe.md").read_text()
    assert (tmp_path / "position_probe.png").stat().st_size > 0


def test_vision_depths_are_compared_side_by_side(tmp_path):
    result = probe.main(["--steps", "1", "--thetas", "20", "--vision-depths", "2", "4", "--stem", "depth",
                         "--out", str(tmp_path)])
    runs = result["runs"]
    two, four = "20 @ [4, 6, 6], vision depth 2", "20 @ [4, 6, 6], vision depth 4"
    assert list(runs) == [two, four]
    # same seed, same examples: only the tower differs, so would the losses if the depth were ignored
    assert runs[two]["curve"] != runs[four]["curve"]
    assert f"| {four} |" in (tmp_path / "depth.md").read_text()
    assert (tmp_path / "depth.png").stat().st_size > 0


def test_a_theta_may_carry_its_own_mrope_section():
    assert probe.rope_variant("20") == (20.0, [4, 6, 6])  # the shipped model's
    assert probe.rope_variant("1e6@0,2,14") == (1e6, [0, 2, 14])
    model, _ = probe.random_model(1e6, 0, mrope_section=[0, 2, 14])
    assert model.model.language_model.rotary_emb.mrope_section == [0, 2, 14]
    shipped, _ = probe.random_model(1e6, 0)
    assert shipped.model.language_model.rotary_emb.mrope_section == [4, 6, 6]
