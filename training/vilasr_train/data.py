"""Drawing trajectories for supervised fine-tuning: read, validate, report, collate.

Input: ViLaSR-data ShareGPT files and our synthetic trajectories — a JSON list (or JSON lines) of
records ``{"conversations": [{role|from, content|value}], "images": [paths]}`` with ``<image>``
placeholders; ``images`` holds the inputs first, then every drawn image in order (spec §8).

Every record is checked once, before training; an invalid one is skipped and counted by reason in
the ``DataReport`` (the public data is known to miss image files). Tokenisation and image resizing
are the core's (``prepare_image``, ``DialogueEncoding``), exactly what the node runs at inference.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from ros_vilasr.core import chat
from ros_vilasr.core.encoding import encode_dialogue
from ros_vilasr.core.images import FACTOR, prepare_image, resized_size
from ros_vilasr.core.protocol import TOOLS, parse_turn

from .config import InputError

log = logging.getLogger(__name__)

PLACEHOLDER = "<image>"
ROLES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant"}
IGNORE = -100
MAX_EXAMPLES_PER_REASON = 5


class InvalidRecord(ValueError):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


@dataclass
class DataReport:
    """What was read, what was kept, and why the rest was skipped (written as JSON)."""

    files: dict[str, dict[str, int]] = field(default_factory=dict)  # path -> records, kept
    skipped: Counter = field(default_factory=Counter)  # reason -> records skipped before training
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason -> a few "file#n: detail"
    skipped_in_training: Counter = field(default_factory=Counter)  # reason -> examples lost at load time

    def skip(self, reason: str, source: str, detail: str = "") -> None:
        self.skipped[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < MAX_EXAMPLES_PER_REASON:
            shown.append(f"{source}: {detail}" if detail else source)

    def to_json(self) -> dict:
        return {"records": sum(f["records"] for f in self.files.values()),
                "kept": sum(f["kept"] for f in self.files.values()),
                "skipped": dict(self.skipped.most_common()), "files": self.files,
                "examples": self.examples,
                "skipped_in_training": dict(self.skipped_in_training.most_common())}

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")


# -- reading and checking ----------------------------------------------------------------------


def read_records(path: Path) -> list:
    """The records of a JSON list or JSON-lines file (an unparseable line becomes None, counted
    as malformed). A file that cannot be read at all is a configuration error and raises."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"data file {path} cannot be read ({exc.__class__.__name__}: {exc})") from None
    if path.suffix == ".jsonl":
        return [_json_or_none(line) for line in text.splitlines() if line.strip()]
    try:
        records = json.loads(text)
    except ValueError as exc:
        raise InputError(f"data file {path} is not JSON ({exc}); JSON lines files end in .jsonl") from None
    if not isinstance(records, list):
        raise InputError(f"{path}: expected a JSON list of records")
    return records


def _json_or_none(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None


def to_messages(conversations: list[dict]) -> list[dict]:
    """ShareGPT turns → the core's messages: ``<image>`` becomes ``{"type": "image", "index": k}``
    (k counts placeholders over the whole dialogue); assistant content stays a string."""
    messages, k = [], 0
    for turn in conversations:
        pieces = turn["content"].split(PLACEHOLDER)
        if len(pieces) == 1:
            messages.append({"role": turn["role"], "content": turn["content"]})
            continue
        parts = []
        for i, piece in enumerate(pieces):
            if i:
                parts.append({"type": "image", "index": k})
                k += 1
            if piece:
                parts.append({"type": "text", "text": piece})
        messages.append({"role": turn["role"], "content": parts})
    return messages


def normalise(record, source: str, image_dir: Path) -> dict:
    """Check a record's structure and protocol; return ``{conversations, images, source}`` with
    roles canonical and image paths absolute. Raises ``InvalidRecord``."""
    if not isinstance(record, dict) or not isinstance(record.get("conversations"), list):
        raise InvalidRecord("malformed", "not an object with a 'conversations' list")
    images = record.get("images") or []
    if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
        raise InvalidRecord("malformed", "'images' is not a list of paths")
    turns = []
    for turn in record["conversations"]:
        if not isinstance(turn, dict):
            raise InvalidRecord("malformed", "a turn is not an object")
        role, content = turn.get("role", turn.get("from")), turn.get("content", turn.get("value"))
        if not isinstance(content, str):
            raise InvalidRecord("malformed", f"a {role} turn has no text content")
        if role not in ROLES:
            raise InvalidRecord("unknown_role", repr(role))
        turns.append({"role": ROLES[role], "content": content})

    roles = [t["role"] for t in turns]
    dialogue = roles[1:] if roles[:1] == ["system"] else roles
    expected = ["user", "assistant"] * (len(dialogue) // 2)
    if not dialogue or dialogue != expected:
        raise InvalidRecord("bad_turn_order", " ".join(roles))
    placeholders = sum(t["content"].count(PLACEHOLDER) for t in turns)
    if placeholders != len(images):
        raise InvalidRecord("image_count_mismatch", f"{placeholders} placeholders, {len(images)} images")

    seen = 0  # images shown before the current turn
    assistant = [i for i, t in enumerate(turns) if t["role"] == "assistant"]
    for i, turn in enumerate(turns):
        if turn["role"] != "assistant":
            if turn["role"] != "user" and PLACEHOLDER in turn["content"]:
                raise InvalidRecord("image_outside_user_turn", f"turn {i} ({turn['role']})")
            seen += turn["content"].count(PLACEHOLDER)
            continue
        if PLACEHOLDER in turn["content"]:
            raise InvalidRecord("image_outside_user_turn", f"turn {i} (assistant)")
        parsed = parse_turn(turn["content"])
        if i == assistant[-1]:
            if parsed.answer is None:
                raise InvalidRecord("no_final_answer", f"turn {i}")
        elif parsed.action not in TOOLS or not parsed.ops or parsed.answer is not None:
            raise InvalidRecord("drawing_turn_without_ops", f"turn {i}: {'; '.join(parsed.problems)}")
        elif bad := [op.index for op in parsed.ops if not 1 <= op.index <= seen]:
            raise InvalidRecord("bad_image_index", f"turn {i} draws on image {bad[0]} of {seen}")

    paths = [str(p if (p := Path(s)).is_absolute() else image_dir / p) for s in images]
    return {"conversations": turns, "images": paths, "source": source}


def text_alone(record: dict) -> dict:
    """A normalised record with its images taken out, their placeholders removed and the text
    kept: a curriculum step (e.g. learning to read the question back before images share the
    context). A record that draws needs its images: ``InvalidRecord("draws_on_images")``."""
    if sum(t["role"] == "assistant" for t in record["conversations"]) > 1:
        raise InvalidRecord("draws_on_images", "only one-turn records can be trained without their images")
    turns = [t | {"content": t["content"].replace(PLACEHOLDER, "")} for t in record["conversations"]]
    return record | {"conversations": turns, "images": []}


def check_image(path: str) -> tuple[int, int] | str:
    """The image's (width, height) if it decodes, else the reason it cannot be used."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.width < 1 or im.height < 1:
                return "unreadable_image"
            return im.size
    except FileNotFoundError:
        return "missing_image"
    except Exception:  # noqa: BLE001 - any decoder failure means the same: unusable
        return "unreadable_image"


def image_tokens(size: tuple[int, int], max_pixels: int) -> int:
    """``<|image_pad|>`` tokens of an image after smart resize (one per 28x28 patch group)."""
    w, h = resized_size(*size, max_pixels)
    return (w // FACTOR) * (h // FACTOR)


def read_checked(paths, normalise_record, images_root=None, workers: int = 8) -> tuple[list[dict], dict, DataReport]:
    """Read every file's records and normalise them (invalid ones reported), then check each image
    they name once, in ``workers`` threads. Returns the candidates, ``{image: size or why not}``
    and the report. Shared by trajectories (SFT) and prompts (RL, rejection sampling)."""
    report, candidates = DataReport(), []
    for path in map(Path, paths):
        records = read_records(path)
        report.files[str(path)] = {"records": len(records), "kept": 0}
        image_dir = Path(images_root) if images_root else path.parent
        for n, record in enumerate(records):
            source = f"{path}#{n}"
            try:
                candidates.append(normalise_record(record, source, image_dir))
            except InvalidRecord as exc:
                report.skip(exc.reason, source, exc.detail)
    unique = sorted({p for c in candidates for p in c["images"]})
    with ThreadPoolExecutor(max(1, workers)) as pool:
        checks = tqdm(pool.map(check_image, unique), total=len(unique), desc="checking images", unit="img")
        return candidates, dict(zip(unique, checks)), report


def load_trajectories(paths, tokenizer, *, images_root=None, max_pixels: int, max_length: int | None,
                      workers: int = 8, drop_images: bool = False) -> tuple[list[dict], DataReport]:
    """Read and validate every record; return the valid ones (``{conversations, images, source}``)
    and the report. ``max_length``: records longer than this many tokens are skipped;
    ``drop_images``: every record's text alone (``text_alone``)."""
    def checked(record, source: str, image_dir: Path) -> dict:
        record = normalise(record, source, image_dir)
        return text_alone(record) if drop_images else record

    candidates, sizes, report = read_checked(paths, checked, images_root, workers)
    readable = []
    for c in candidates:
        if bad := next((p for p in c["images"] if isinstance(sizes[p], str)), None):
            report.skip(sizes[bad], c["source"], bad)
        else:
            readable.append(c)

    # Token count without touching pixels: the text with one pad per image, plus the other pads.
    texts = [chat.render(to_messages(c["conversations"])) for c in readable]
    counts = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []
    kept = []
    for c, n in zip(readable, counts):
        n += sum(image_tokens(sizes[p], max_pixels) - 1 for p in c["images"])
        if max_length is not None and n > max_length:
            report.skip("too_long", c["source"], f"{n} tokens > {max_length}")
            continue
        kept.append(c)
        report.files[c["source"].rpartition("#")[0]]["kept"] += 1
    log.info("data: kept %d of %d records; skipped %s", len(kept), sum(f["records"] for f in report.files.values()),
             dict(report.skipped) or "none")
    return kept, report


# -- batching ----------------------------------------------------------------------------------


def encode_example(processor, example: dict, max_pixels: int, loss_pattern: re.Pattern | None = None) -> dict:
    """One trajectory → input ids, labels (input ids on assistant tokens, -100 elsewhere; with
    ``loss_pattern``, only on the assistant tokens inside its matches), ``mm_token_type_ids`` and
    vision inputs, through the core's encoder."""
    images = []
    for path in example["images"]:
        with Image.open(path) as im:
            images.append(prepare_image(im, max_pixels).image)
    enc = encode_dialogue(processor, to_messages(example["conversations"]), images)
    ids = enc.input_ids
    labels = [t if m else IGNORE for t, m in zip(ids, enc.loss_mask)]
    if loss_pattern is not None:
        labels = only_matches(processor.tokenizer, labels, loss_pattern)
    return {"input_ids": ids, "labels": labels, "mm_token_type_ids": enc.mm_token_type_ids(ids),
            **enc.vision_inputs()}


def only_matches(tokenizer, labels: list[int], pattern: re.Pattern) -> list[int]:
    """``labels`` kept only on the tokens that overlap a match of ``pattern`` in their turn's text
    (a turn: a run of supervised tokens)."""
    out, start = [IGNORE] * len(labels), 0
    while start < len(labels):
        if labels[start] == IGNORE:
            start += 1
            continue
        stop = next((k for k in range(start, len(labels)) if labels[k] == IGNORE), len(labels))
        pieces = [tokenizer.decode([t]) for t in labels[start:stop]]
        ends = list(accumulate(map(len, pieces)))
        for match in pattern.finditer("".join(pieces)):
            for k, (piece, end) in enumerate(zip(pieces, ends)):
                if end - len(piece) < match.end() and end > match.start():
                    out[start + k] = labels[start + k]
        start = stop
    return out


class DialogueCollator:
    """Trajectories → a right-padded batch for Qwen2.5-VL.

    An example that fails to load now (an image deleted or corrupted since validation) never stops
    the run: it is replaced by a stand-in, a valid example whose labels are all -100 (no loss), and
    its reason travels in the batch under ``data_problems`` for the trainer to count.

    A batch without images (text-only records) gets a blank one after its first row's last token,
    seen by no earlier token and trained on by none: the vision tower runs on every batch, which
    ZeRO-3 needs on every rank (all ranks gather each module's weights, in the order they run).
    """

    def __init__(self, processor, dataset, *, max_pixels: int, max_length: int | None,
                 loss_pattern: re.Pattern | None = None):
        self.processor, self.dataset = processor, dataset
        self.max_pixels, self.max_length, self.loss_pattern = max_pixels, max_length, loss_pattern
        self.pad_id = processor.tokenizer.pad_token_id
        self._stand_in: dict | None = None

    @functools.cached_property
    def blank_image(self) -> dict:
        """A row of one blank image and nothing to learn: encoded once, when a batch first needs it."""
        blank = prepare_image(Image.new("RGB", (FACTOR, FACTOR)), self.max_pixels).image
        enc = encode_dialogue(self.processor, [{"role": "user", "content": [{"type": "image", "index": 0}]}], [blank])
        return {"input_ids": enc.input_ids, "labels": [IGNORE] * len(enc.input_ids),
                "mm_token_type_ids": enc.mm_token_type_ids(enc.input_ids), **enc.vision_inputs()}

    def encode(self, example: dict) -> dict:
        row = encode_example(self.processor, example, self.max_pixels, self.loss_pattern)
        if self.max_length is not None and len(row["input_ids"]) > self.max_length:
            raise InvalidRecord("too_long", f"{len(row['input_ids'])} tokens")
        if self.loss_pattern is not None and all(t == IGNORE for t in row["labels"]):  # nothing to learn: counted
            raise InvalidRecord("no_loss_pattern_match", f"no assistant text matches {self.loss_pattern.pattern!r}")
        return row

    def stand_in(self) -> dict:
        if self._stand_in is None:
            for example in self.dataset:
                try:
                    row = self.encode(example)
                except Exception:  # noqa: BLE001 - look for any loadable example
                    continue
                self._stand_in = row | {"labels": [IGNORE] * len(row["labels"])}
                break
            else:
                raise RuntimeError("no example of the training set can be loaded any more")
        return self._stand_in

    def __call__(self, examples: list[dict]) -> dict:
        rows, problems = [], []
        for example in examples:
            try:
                rows.append(self.encode(example))
            except Exception as exc:  # noqa: BLE001 - a bad example must not end the run
                reason = exc.reason if isinstance(exc, InvalidRecord) else f"load_failed:{type(exc).__name__}"
                log.warning("skipping %s during training: %s", example.get("source"), exc)
                problems.append(reason)
                rows.append(self.stand_in())
        return self.pad(rows) | {"data_problems": problems}

    def pad(self, rows: list[dict]) -> dict:
        if not any("pixel_values" in r for r in rows):
            first, blank = rows[0], self.blank_image
            rows = [{k: first[k] + blank[k] for k in ("input_ids", "labels", "mm_token_type_ids")} | {
                "pixel_values": blank["pixel_values"], "image_grid_thw": blank["image_grid_thw"]}, *rows[1:]]
        width = max(len(r["input_ids"]) for r in rows)

        def column(key, fill):
            return torch.tensor([r[key] + [fill] * (width - len(r[key])) for r in rows])

        batch = {"input_ids": column("input_ids", self.pad_id), "labels": column("labels", IGNORE),
                 "mm_token_type_ids": column("mm_token_type_ids", 0),
                 "attention_mask": torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"]))
                                                 for r in rows])}
        batch["pixel_values"] = torch.cat([r["pixel_values"] for r in rows if "pixel_values" in r])
        batch["image_grid_thw"] = torch.cat([r["image_grid_thw"] for r in rows if "image_grid_thw" in r])
        return batch
