"""Supervised fine-tuning on drawing trajectories (stage 1 cold start; stage 2 reuses it).

TRL's ``SFTTrainer`` with our dataset and collator: dataset preparation is skipped (the collator
tokenises with the core's ``DialogueEncoding``, so chat template, image resizing and token ids are
the node's), the loss covers every assistant turn and nothing else (labels are -100 elsewhere).
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from datasets import Dataset
from transformers import AutoModelForImageTextToText
from trl import SFTConfig, SFTTrainer

from ros_vilasr.core.models import copy_profile
from ros_vilasr.core.processor import load_processor

from .checkpoints import ResumeThroughFromPretrained, latest_checkpoint
from .config import InputError, StageConfig
from .data import DataReport, DialogueCollator, load_trajectories
from .distributed import deepspeed_on_cpu, gather, on_main_process
from .readout import HISTORY_NAME, UntilRead, load_records

log = logging.getLogger(__name__)

REPORT_NAME = "data_report.json"


@dataclass
class Config(StageConfig):
    trl_config: ClassVar[type] = SFTConfig
    trainer_defaults: ClassVar[dict[str, Any]] = {
        "max_length": 18432,  # cutoff: longer trajectories are skipped (and reported), never cut
        "report_to": "tensorboard",
    }

    max_epochs: float | None = None  # at most this many passes over the loaded data (caps max_steps)
    # end training once the model reads maze cells (readout.UntilRead): {data: maze trajectories
    # of a validation set, n: 48, discs: [start, goal], need: all|any, threshold: 0.9, every: 50}
    until_read: dict[str, Any] = field(default_factory=dict)
    # a regular expression: the loss covers only the assistant text it matches (e.g. the object
    # names of synth.ask's answers), not every assistant token; a record without a match is
    # counted in the data report (skipped_in_training: no_loss_pattern_match)
    loss_pattern: str | None = None
    # train on the records' text alone, their images left out (data.text_alone; one-turn records
    # only, a record that draws is skipped as draws_on_images)
    drop_images: bool = False


class DrawingSFTTrainer(ResumeThroughFromPretrained, SFTTrainer):
    """``SFTTrainer`` that counts the examples its collator could not load and keeps the data
    report up to date next to the checkpoints."""

    def __init__(self, *args, data_report: DataReport, **kwargs):
        super().__init__(*args, **kwargs)
        self.data_report = data_report

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self.data_report.skipped_in_training.update(inputs.pop("data_problems", ()))
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        self.write_data_report()

    def write_data_report(self) -> None:
        """Sum the load-time counts of every process; the main process writes the report."""
        counts = gather(dict(self.data_report.skipped_in_training))
        if self.is_world_process_zero():
            total = sum(map(Counter, counts), Counter())
            replace(self.data_report, skipped_in_training=total).write(Path(self.args.output_dir) / REPORT_NAME)


def freeze_vision(model) -> None:
    """Freeze the vision tower and its projector (``visual.merger``), as in the paper's stage 1."""
    model.model.visual.requires_grad_(False)


def cap_steps(args: SFTConfig, max_epochs: float | None, examples: int) -> None:
    """Lower ``max_steps`` to ``max_epochs`` passes over ``examples``: a step count sized for
    hundreds of dialogues would drill a handful into the model until it forgets the rest."""
    if max_epochs is None or args.max_steps <= 0:
        return  # epochs decide already
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    cap = max(1, math.ceil(max_epochs * examples / per_step))
    if cap < args.max_steps:
        log.info("training %d steps, not %d: %g passes over %d examples", cap, args.max_steps, max_epochs, examples)
        args.max_steps = cap


def until_read(config: Config, processor) -> list[UntilRead]:
    """The readout stop ``config.until_read`` asks for (none when it is empty)."""
    spec = dict(config.until_read)
    if not spec:
        return []
    path = spec.pop("data", None)
    if not path or not Path(path).is_file():
        raise InputError(f"until_read: data file {path} not found (maze trajectories to read the cells of)")
    records = load_records(path, spec.pop("n", 48))
    try:
        return [UntilRead(processor, records, history=Path(config.out) / HISTORY_NAME, max_pixels=config.max_pixels,
                          **{"discs": ["start", "goal"], "threshold": 0.9, "every": 50} | spec)]
    except (TypeError, ValueError) as exc:
        raise InputError(f"until_read: {exc}") from exc


def train(config: Config) -> Path:
    out = Path(config.out)
    args = SFTConfig(
        output_dir=str(out), **deepspeed_on_cpu(config.trainer),
        remove_unused_columns=False,  # the collator reads conversations and image paths
        dataset_kwargs={"skip_prepare_dataset": True},  # ... and tokenises them itself
    )
    processor = load_processor(config.model)  # saved with every checkpoint, as it came
    try:
        loss_pattern = re.compile(config.loss_pattern) if config.loss_pattern else None
    except re.error as exc:
        raise InputError(f"loss_pattern {config.loss_pattern!r} is not a regular expression: {exc}") from exc
    callbacks = until_read(config, processor)
    records, report = on_main_process(lambda: load_trajectories(
        config.data, processor.tokenizer, images_root=config.images_root, max_pixels=config.max_pixels,
        max_length=args.max_length, workers=config.validation_workers, drop_images=config.drop_images))
    if not records:
        raise InputError(f"no valid training record in {', '.join(config.data)}: {report.to_json()['skipped']}")
    dataset = Dataset.from_list(records)
    cap_steps(args, config.max_epochs, len(records))

    model = AutoModelForImageTextToText.from_pretrained(config.model, dtype=torch.float32)
    if config.freeze_vision:
        freeze_vision(model)
    sizes = [(getattr(p, "ds_numel", p.numel()), p.requires_grad) for p in model.parameters()]  # ZeRO-3 aware
    log.info("model %s: %d trainable parameters of %d", config.model,
             sum(n for n, trainable in sizes if trainable), sum(n for n, _ in sizes))

    trainer = DrawingSFTTrainer(
        model=model, args=args, train_dataset=dataset,
        data_collator=DialogueCollator(processor, dataset, max_pixels=config.max_pixels,
                                       max_length=args.max_length, loss_pattern=loss_pattern),
        processing_class=processor,
        data_report=report,
        callbacks=callbacks,
    )
    trainer.write_data_report()
    checkpoint = latest_checkpoint(out) if config.resume else None
    if config.resume:
        log.info("resuming from %s", checkpoint or "scratch (no checkpoint yet)")
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(str(out))
    copy_profile(config.model, out)
    trainer.write_data_report()
    log.info("model saved to %s", out)
    return out
