"""Cell readout: does a model read in which cells a maze's start S and goal G are?

Teacher-forced on maze records whose first assistant turn names the cells ("... S is at row r,
column c and the red goal G at row r', column c' ..."): the share of each of the four digits the
model predicts. The perception probe reports it; ``UntilRead`` ends a training phase once the
wanted discs are read, since when a disc "clicks" varies from run to run
(benchmarks/results/perception_probe_labels.md) and a fixed step count does not reproduce it.
"""

from __future__ import annotations

import bisect
import itertools
import json
import logging
import re
from collections import Counter
from pathlib import Path

import torch
from transformers import TrainerCallback

from ros_vilasr.core.images import MAX_PIXELS_TRAIN

from .data import DialogueCollator

log = logging.getLogger(__name__)

DIGITS = ("S row", "S column", "G row", "G column")
DISCS = {"start": (0, 1), "goal": (2, 3)}  # a disc's digits in DIGITS
HISTORY_NAME = "readout.jsonl"
CELL = re.compile(r"row (\d+), column (\d+)")


def collator(processor, max_pixels: int = MAX_PIXELS_TRAIN) -> DialogueCollator:
    """The training collator, used one record at a time: ``c.pad([c.encode(record)])`` is a batch."""
    return DialogueCollator(processor, [], max_pixels=max_pixels, max_length=None)


def first_turn(record: dict) -> dict:
    """The record up to its first assistant turn, with only the images that far: the cells are
    named there, and the rest of a dialogue would only cost time."""
    messages = record["conversations"]
    end = next(i for i, m in enumerate(messages) if m.get("role", m.get("from")) in ("assistant", "gpt")) + 1
    kept = messages[:end]
    images = sum(m.get("content", m.get("value", "")).count("<image>") for m in kept)
    return {"conversations": kept, "images": record["images"][:images]}


def load_records(path: str | Path, n: int | None = None) -> list[dict]:
    """The first ``n`` records of a trajectories file, image paths resolved next to it."""
    path = Path(path)
    return [{"conversations": r["conversations"], "images": [str(path.parent / p) for p in r["images"]]}
            for r in json.loads(path.read_text())[:n]]


def cell_digits(tokens: list[str], first: int) -> list[int]:
    """Positions of the tokens holding the four cell digits ("row r, column c" for S, then for G)
    from token ``first`` on: found in the decoded text, so any tokenizer's split will do."""
    starts, text = [], ""
    for token in tokens[first:]:
        starts.append(len(text))
        text += token
    found = itertools.islice(CELL.finditer(text), 2)
    return [first + bisect.bisect_right(starts, m.start(g)) - 1 for m in found for g in (1, 2)]


def s_read_as_g(predicted: list[int], truth: list[int]) -> tuple[int, int]:
    """(S digits predicted as G's same digit, S digits that differ from G's): a model that finds
    only one disc answers G's cell for S too."""
    differ = [k for k in (0, 1) if truth[k] != truth[k + 2]]
    return sum(predicted[k] == truth[k + 2] for k in differ), len(differ)


@torch.no_grad()
def readout(processor, model, records: list[dict], max_pixels: int = MAX_PIXELS_TRAIN) -> dict:
    """Hits per digit (``DIGITS`` order), the most frequent true digit's count per digit, items,
    and S read as G."""
    hits, truth, batches = [0] * 4, [Counter() for _ in range(4)], collator(processor, max_pixels)
    as_g = [0, 0]
    for record in records:
        row = batches.encode(record)
        batch = {k: v.to(model.device) for k, v in batches.pad([row]).items() if k != "labels"}
        logits = model(**batch).logits[0]
        tokens = [processor.tokenizer.decode([t]) for t in row["input_ids"]]
        first = next(i for i, label in enumerate(row["labels"]) if label != -100)
        positions = cell_digits(tokens, first)
        if len(positions) != 4:
            raise ValueError(f"the first answer of {record['images'][:1]} names no S and G cells: "
                             f"{processor.tokenizer.decode(row['input_ids'][first:first + 60])!r}")
        predicted = [logits[pos - 1].argmax().item() for pos in positions]
        true = [row["input_ids"][pos] for pos in positions]
        for k in range(4):
            hits[k] += int(predicted[k] == true[k])
            truth[k][true[k]] += 1
        as_g = [a + b for a, b in zip(as_g, s_read_as_g(predicted, true))]
    return {"hits": hits, "majority": [c.most_common(1)[0][1] for c in truth], "n": len(records),
            "s_as_g": as_g[0], "s_differs": as_g[1]}


def discs_read(result: dict, threshold: float) -> list[str]:
    """The discs whose row and column are both predicted in at least ``threshold`` of the items."""
    return [disc for disc, digits in DISCS.items()
            if all(result["hits"][k] >= threshold * result["n"] for k in digits)]


class UntilRead(TrainerCallback):
    """Every ``every`` steps, read the cells of ``records`` and end training once ``discs`` are read
    (``need``: all of them, or any one). Each readout is appended to ``OUT/readout.jsonl``."""

    def __init__(self, processor, records: list[dict], discs: list[str], threshold: float, every: int,
                 need: str = "all", history: Path | None = None, max_pixels: int = MAX_PIXELS_TRAIN):
        unknown = set(discs) - set(DISCS)
        if unknown or not discs or need not in ("all", "any") or every < 1 or not records:
            raise ValueError(f"discs from {sorted(DISCS)}, need all or any, every >= 1, some records; "
                             f"got discs={discs}, need={need!r}, every={every}, {len(records)} records")
        self.processor, self.records, self.discs = processor, [first_turn(r) for r in records], discs
        for record in self.records:  # checked now, not after the first `every` steps
            said = record["conversations"][-1]
            if len(CELL.findall(said.get("content", said.get("value", "")))) < 2:
                raise ValueError(f"the first answer of a record with images {record['images']} names no S and G cells")
        self.threshold, self.every, self.need, self.history = threshold, every, need, history
        self.max_pixels = max_pixels

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every:
            return
        was_training = model.training
        model.eval()
        result = readout(self.processor, model, self.records, self.max_pixels)
        model.train(was_training)
        read = discs_read(result, self.threshold)
        enough = (all if self.need == "all" else any)(d in read for d in self.discs)
        shares = {name: round(h / result["n"], 4) for name, h in zip(DIGITS, result["hits"])}
        log.info("step %d readout: %s; read: %s%s", state.global_step,
                 ", ".join(f"{k} {v:.0%}" for k, v in shares.items()), ", ".join(read) or "none",
                 " -> stopping" if enough else "")
        if self.history is not None and state.is_world_process_zero:
            with self.history.open("a") as f:
                f.write(json.dumps({"step": state.global_step, **shares, "read": read, "stop": enough}) + "\n")
        if enough:
            control.should_training_stop = True
