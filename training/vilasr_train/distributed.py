"""Process-group helpers shared by the training stages (any launcher: python, torchrun, accelerate)."""

from __future__ import annotations

import os

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, gather_object


def deepspeed_on_cpu(trainer_kwargs: dict) -> dict:
    """Call before building the stage's TRL config; returns its keyword arguments.

    Without a GPU, accelerate (1.15) starts DeepSpeed's process group but records no backend, so
    every rank believes it is the only process (no data sharding, every rank saving, DeepSpeed's
    batch-size check failing). For a DeepSpeed run under a launcher on a machine without CUDA,
    start the process state here with gloo and have the TRL config use it as it is."""
    if not trainer_kwargs.get("deepspeed") or torch.cuda.is_available() or "LOCAL_RANK" not in os.environ:
        return trainer_kwargs
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    PartialState(backend="gloo")
    del os.environ["ACCELERATE_USE_DEEPSPEED"]
    accelerator = dict(trainer_kwargs.get("accelerator_config") or {}) | {"use_configured_state": True}
    return trainer_kwargs | {"accelerator_config": accelerator}


def on_main_process(fn):
    """``fn()`` run once, on the main process, and its result handed to every process: one
    validation pass per job, and the same dataset (so the same sampling order) on every rank."""
    state = PartialState()
    result = [fn() if state.is_main_process else None]
    if state.num_processes > 1:
        broadcast_object_list(result)
    return result[0]


def end_process_group() -> None:
    """Tear down the process group before the interpreter exits: left to exit-time destructors,
    gloo's threads sometimes abort a rank ("terminate called without an active exception") after
    the model was already saved, and the launcher then fails the whole job."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def gather(value) -> list:
    """``value`` from every process, in rank order."""
    return gather_object([value])
