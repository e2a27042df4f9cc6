"""benchmarks/recall_probe.py (issue 13's diagnostic) at toy scale: its answer is the question's
object at the distance it reports, and a run writes its results per theta."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest

pytest.importorskip("torch")

from benchmarks import recall_probe as probe  # noqa: E402
from ros_vilasr.core.models import EMBEDDED_DIR  # noqa: E402
from ros_vilasr.core.processor import load_processor  # noqa: E402


def test_the_answer_is_the_question_object_at_the_reported_distance():
    tokenizer = load_processor(EMBEDDED_DIR).tokenizer
    rng = random.Random(5)
    distances = []
    for _ in range(20):
        ids, at, distance = probe.example(tokenizer, rng)
        text = tokenizer.decode(ids[:at])
        asked = re.match(r"Which object is closest to the (.+?)\?", text).group(1)
        assert tokenizer.decode(ids[at:]).strip() == asked
        assert text.endswith(" It asked about the")
        assert set(re.findall(r"I see the (.+?)\.", text)) <= set(probe.OBJECTS)
        # the question's object starts `distance` tokens before the answer
        assert tokenizer.decode(ids[at - distance:at]).startswith(f" {asked}?")
        distances.append(distance)
    assert len({probe.bucket(d) for d in distances}) == len(probe.BUCKETS)  # every bucket is exercised


def test_a_run_writes_curves_per_theta(tmp_path):
    result = probe.main(["--steps", "2", "--thetas", "1e6", "20", "--out", str(tmp_path)])
    assert set(result["runs"]) == {"1e+06", "20"}
    for run in result["runs"].values():
        assert np.array(run["curve"]).shape == (2, len(probe.BUCKETS))
    assert result["runs"]["20"]["curve"] != result["runs"]["1e+06"]["curve"]  # the theta reaches the model
    saved = json.loads((tmp_path / "recall_probe.json").read_text())
    assert saved["runs"]["20"]["curve"] == result["runs"]["20"]["curve"]
    assert "| 1e+06 |" in (tmp_path / "recall_probe.md").read_text()
    assert (tmp_path / "recall_probe.png").stat().st_size > 0
    probe.main(["--steps", "1", "--thetas", "20", "--stem", "longer", "--out", str(tmp_path)])
    assert "![learning curves](longer.png)" in (tmp_path / "longer.md").read_text()
    assert (tmp_path / "longer.png").stat().st_size > 0
