"""Process-group helpers shared by the training stages (any launcher: python, torchrun, accelerate)."""

from __future__ import annotations

import os

import torch.distributed as dist
from accelerate import PartialState
from accelerate.utils import DistributedType, broadcast_object_list, gather_object


def repair_deepspeed_cpu_state() -> None:
    """Call after building the stage's TRL config. Without a GPU, accelerate (1.15) starts
    DeepSpeed's process group but records no backend, so every rank believes it is the only
    process: no data sharding, every rank saving. Copy the real ranks into the shared state."""
    state = PartialState()
    if (state.distributed_type == DistributedType.DEEPSPEED and dist.is_initialized()
            and state.num_processes != dist.get_world_size()):
        state.backend = dist.get_backend()
        state.num_processes, state.process_index = dist.get_world_size(), dist.get_rank()
        state.local_process_index = int(os.environ.get("LOCAL_RANK", 0))


def on_main_process(fn):
    """``fn()`` run once, on the main process, and its result handed to every process: one
    validation pass per job, and the same dataset (so the same sampling order) on every rank."""
    state = PartialState()
    result = [fn() if state.is_main_process else None]
    if state.num_processes > 1:
        broadcast_object_list(result)
    return result[0]


def gather(value) -> list:
    """``value`` from every process, in rank order."""
    return gather_object([value])
