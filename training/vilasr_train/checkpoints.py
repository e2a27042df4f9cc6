"""Checkpoint handling shared by the trainers."""

from __future__ import annotations

from pathlib import Path


class ResumeThroughFromPretrained:
    """Trainer mixin: restore weights on resume through ``from_pretrained``.

    Without DeepSpeed, transformers 5.20 restores a checkpoint with a bare, non-strict
    ``load_state_dict``; Qwen2.5-VL checkpoints are saved under the original key names
    (``visual.*``, ``model.layers.*``), so nothing matches, a warning is all, and the run silently
    continues from its initial weights (huggingface/transformers#43701). ``from_pretrained`` knows
    the renaming."""

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        if model is not None:  # FSDP / SageMaker: their own loaders
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        saved = type(self.model).from_pretrained(resume_from_checkpoint, dtype=self.model.dtype)
        self.model.load_state_dict(saved.state_dict())


def latest_checkpoint(out: str | Path) -> str | None:
    """The newest complete ``checkpoint-N`` in ``out``: the Trainer writes trainer_state.json last,
    so a run killed while saving leaves a checkpoint without it, which is passed over."""
    done = [p for p in Path(out).glob("checkpoint-*")
            if p.name.removeprefix("checkpoint-").isdigit() and (p / "trainer_state.json").is_file()]
    return str(max(done, key=lambda p: int(p.name.removeprefix("checkpoint-")))) if done else None
