"""benchmarks/loss_breakdown.py classes every target token of a teacher-forced oracle dialogue: the
cells S and G were seen in, the drawings' coordinates, the answer, other digits and text — with
the shipped model's tokenizer and its loss on each token; and the read-out of an image token's place
from the vision tower's output."""

from __future__ import annotations

import json
import math
import re

import numpy as np
from PIL import Image
from transformers import Qwen2_5_VLForConditionalGeneration
from vilasr_train.data import DialogueCollator, normalise

from benchmarks.loss_breakdown import dialogue_losses, position_readout
from ros_vilasr.core.models import EMBEDDED, resolve_model, run_profile
from ros_vilasr.core.processor import load_processor
from ros_vilasr.synth import maze
from ros_vilasr.synth.trajectories import write_dataset


def test_every_target_token_is_classed_by_what_it_says(tmp_path):
    write_dataset([maze.maze_task(5, 0, sizes=(3,))], tmp_path)
    record = normalise(json.loads((tmp_path / "trajectories.json").read_text())[0], "maze", tmp_path)
    path = resolve_model(EMBEDDED)
    collator = DialogueCollator(load_processor(path), [], max_pixels=run_profile(path)["max_pixels"], max_length=None)
    tokens = dialogue_losses(Qwen2_5_VLForConditionalGeneration.from_pretrained(path).eval(), collator, record)

    def joined(cls):
        return "".join(token for c, token, _ in tokens if c == cls)

    turns = [t["content"] for t in record["conversations"] if t["role"] == "assistant"]
    text = "".join(turns)
    assert "".join(token for _, token, _ in tokens) == "".join(t + "<|im_end|>" for t in turns)  # each once
    cells = re.findall(r"(?:row|column) (\d+)", text)
    assert cells and re.sub(r"\D", "", joined("cell")) == "".join(cells)
    answer = re.search(r"<answer>(.*?)</answer>", text).group(1)
    letter, number = joined("answer letter").strip("<>"), joined("answer number").strip("<>")
    assert (letter, number) == ((answer, "") if answer.isalpha() else ("", answer))
    drawn = "".join(re.findall(r"```json(.*?)```", text, re.S))
    assert re.sub(r"\D", "", joined("coordinate")) == re.sub(r"\D", "", drawn)
    assert all(math.isfinite(loss) and loss >= 0 for _, _, loss in tokens)


def test_the_position_readout_finds_a_place_only_where_the_tokens_carry_one():
    path = resolve_model(EMBEDDED)
    model, processor = Qwen2_5_VLForConditionalGeneration.from_pretrained(path).eval(), load_processor(path)
    grey = [Image.new("RGB", (224, 224), (128, 128, 128)) for _ in range(4)]
    ramp = np.repeat(np.linspace(0, 255, 224, dtype=np.uint8)[:, None], 224, 1)  # red = row, green = column
    painted = position_readout(model, processor, 4 * [Image.fromarray(np.stack([ramp, ramp.T, 0 * ramp], -1))])
    flat = position_readout(model, processor, grey)
    assert flat["images"] == 4 and flat["row"] <= 0.01 and flat["column"] <= 0.01  # identical tokens
    assert painted["row"] > 0.9 and painted["column"] > 0.9, painted
