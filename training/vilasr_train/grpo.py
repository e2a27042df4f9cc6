"""Stage 3: GRPO with drawing inside the rollouts (spec §6–7).

Design: ``DrawingGRPOTrainer`` subclasses TRL's ``GRPOTrainer`` and replaces one method,
``_generate_and_score_completions`` — the producer of the batch that TRL's loss consumes.

Why a GRPOTrainer subclass and not ``transformers.Trainer`` with a loss of our own: everything
downstream of that batch is already what the recipe needs — the token-level clipped objective
with separate low / high clip (``epsilon`` / ``epsilon_high``), the optional KL term whose
reference model TRL builds only when ``beta > 0``, the ``dapo`` token mean over the update batch,
the buffering that turns one rollout batch into several optimizer steps (``steps_per_generation``,
``num_iterations``), the per-sample slicing of ``pixel_values`` by ``image_grid_thw``, vLLM
weight sync, DeepSpeed, logging and checkpoints. What TRL 1.16 cannot do is produce the batch for
this protocol: its tool loop expects ``<tool_call>`` templates and its ``rollout_func`` path drops
images drawn during the rollout from the loss. TRL's multi-turn layout fits an interleaved
dialogue exactly — ``completion_ids`` may hold tool output, masked out by ``tool_mask`` — so the
override fills it from our own rollouts:

1. every prompt row (TRL's sampler already repeats each prompt ``num_generations`` times) opens a
   core ``Session``; all advance together through the core's ``run_sessions`` with the policy
   wrapped in the core's ``TransformersEngine`` (CPU, or GPUs without vLLM) or the vLLM that TRL
   runs colocated / as a server (``use_vllm``, ``vllm_mode``; weights synced every step);
2. rewards (``rewards.py``), advantages normalised within each group; a group whose rewards are
   all equal gets exactly zero advantage, hence no gradient;
3. each dialogue is encoded with the core's ``encode_dialogue`` from the recorded token ids:
   ``tool_mask`` is 1 on generated tokens only, ``pixel_values`` covers every image, drawn ones
   included;
4. old-policy log-probs are recomputed before the update whenever a rollout batch feeds more than
   one optimizer step (otherwise the ratio is exactly 1 and TRL uses the detached current ones).

Keys of TRL's own generation side (``max_completion_length``, ``generation_kwargs``,
``scale_rewards``, ``mask_truncated_completions``, ``vllm_importance_sampling_*``...) play no part:
budgets come from the spec (``Budget.rl``), sampling from ``temperature`` / ``top_p``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from accelerate import PartialState
from datasets import Dataset
from transformers import AutoModelForImageTextToText, TrainerCallback
from trl import GRPOConfig, GRPOTrainer
from trl.models import unwrap_model_for_generation
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.grpo_trainer import RepeatSampler
from trl.trainer.utils import get_config_model_id

from ros_vilasr.core.driver import run_sessions
from ros_vilasr.core.engines.hf import TransformersEngine
from ros_vilasr.core.engines.openai import OpenAIEngine
from ros_vilasr.core.images import NO_RESIZE_MAX_PIXELS
from ros_vilasr.core.models import copy_profile
from ros_vilasr.core.processor import load_processor
from ros_vilasr.core.session import FINISH_REASONS, Session

from .checkpoints import ResumeThroughFromPretrained, latest_checkpoint
from .config import StageConfig
from .distributed import deepspeed_on_cpu, on_main_process
from .rewards import score_rollout, vilasr_reward, vilasr_reward_from_thought
from .rollout import (
    ColocatedVLLM,
    SessionSettings,
    TokenRecorder,
    collate_rollouts,
    encode_rollout,
    load_prompts,
    open_session,
)
from .sft import freeze_vision

log = logging.getLogger(__name__)

ADVANTAGE_EPS = 1e-6  # as the reference implementation (verl)
METRICS_NAME = "metrics.jsonl"
REPORT_NAME = "data_report.json"


@dataclass
class Config(StageConfig):
    """``data``: RL prompt files (``--prompts``). TRL keys go to ``GRPOConfig`` (see config.py)."""

    trl_config: ClassVar[type] = GRPOConfig
    trainer_defaults: ClassVar[dict[str, Any]] = {
        "report_to": "tensorboard",
        "logging_steps": 1,
        "loss_type": "dapo",  # token mean over the update batch (spec §7)
        "epsilon_high": 0.3,
        "vllm_importance_sampling_correction": False,  # our engines return no sampling log-probs
    }

    freeze_vision: bool = False  # the paper trains the vision tower in RL
    prompts_per_rollout: int | None = None  # prompts per rollout batch; None: TRL's batch keys decide
    prompts_per_update: int | None = None  # prompts per optimizer step (default: prompts_per_rollout)
    system_prompt: str | None = None  # a replacement system prompt file
    max_new_tokens: int | None = None  # per turn; None: the spec's RL budget (1024)
    max_total_tokens: int | None = None  # per trajectory; None: the spec's RL budget (13312)
    answer_from_thought: bool = False  # no reward for a letter its final thought did not name (rewards.py)


def batch_keys(config: Config, num_processes: int) -> dict[str, int]:
    """TRL's batch keys for ``prompts_per_rollout`` / ``prompts_per_update`` on this many
    processes, so one config serves any cluster size."""
    if config.prompts_per_rollout is None:
        return {}
    if clash := {"generation_batch_size", "steps_per_generation", "gradient_accumulation_steps"} & set(config.trainer):
        raise ValueError(f"set either prompts_per_rollout or {', '.join(sorted(clash))}, not both")
    group = config.trainer.get("num_generations", GRPOConfig.num_generations)
    per_device = config.trainer.get("per_device_train_batch_size", GRPOConfig.per_device_train_batch_size)
    per_update = config.prompts_per_update or config.prompts_per_rollout
    if config.prompts_per_rollout % per_update:
        raise ValueError(f"prompts_per_rollout ({config.prompts_per_rollout}) must be a multiple of "
                         f"prompts_per_update ({per_update})")
    per_step = per_device * num_processes
    if per_update * group % per_step:
        raise ValueError(f"{per_update} prompts x {group} rollouts per update do not split into "
                         f"{num_processes} processes x {per_device} trajectories")
    return {"generation_batch_size": config.prompts_per_rollout * group,
            "gradient_accumulation_steps": per_update * group // per_step}


def group_advantages(rewards: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(reward − group mean) / (group std + eps) per rollout, and which groups are flat. A flat
    group (all rewards equal) gets exactly 0: it carries no signal, and float round-off in its
    mean must not turn into a gradient."""
    grouped = rewards.view(-1, group_size)
    flat = grouped.max(dim=1).values == grouped.min(dim=1).values
    normalised = (grouped - grouped.mean(dim=1, keepdim=True)) / (grouped.std(dim=1, keepdim=True) + ADVANTAGE_EPS)
    return torch.where(flat.unsqueeze(1), 0.0, normalised).flatten(), flat


class MetricsLog(TrainerCallback):
    """Every log line, as JSON lines next to the checkpoints (appended across resumes)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            with self.path.open("a") as f:
                f.write(json.dumps({"step": state.global_step, **logs}) + "\n")


class EpochSeededRepeatSampler(RepeatSampler):
    """TRL's prompt sampler, its shuffle seeded by (seed, epoch) instead of a generator that only
    moves on: a run resumed in epoch e replays epoch e's prompt order (the trainer calls
    ``set_epoch`` at every epoch, then skips the batches already trained on)."""

    def set_epoch(self, epoch: int) -> None:
        if self.shuffle:
            self.generator.manual_seed((self.seed or 0) * 1_000_003 + epoch)


class DrawingGRPOTrainer(ResumeThroughFromPretrained, GRPOTrainer):
    """``GRPOTrainer`` whose rollouts are draw-to-reason dialogues run by the core (module doc).

    ``train_dataset`` rows are prompt records (``rollout.normalise_prompt``). Reward functions
    take ``(sessions, prompts)`` and return one float per rollout; their weighted sum is the reward.
    ``rollout_processor`` encodes dialogues; it must not resize (the session already did).
    """

    def __init__(self, model, args: GRPOConfig, train_dataset: Dataset, processing_class, *,
                 rollout_processor, sessions: SessionSettings, reward_funcs=(vilasr_reward,), callbacks=None):
        super().__init__(model=model, reward_funcs=list(reward_funcs), args=args, train_dataset=train_dataset,
                         processing_class=processing_class, callbacks=callbacks)
        self.rollout_processor = rollout_processor
        self.session_settings = sessions
        # more than one optimizer step per rollout batch: the ratio needs the rollout policy's log-probs
        self.needs_old_logps = args.gradient_accumulation_steps % (args.steps_per_generation * args.num_iterations) != 0

    def _get_train_sampler(self, dataset=None):
        sampler = super()._get_train_sampler(dataset)
        sampler.__class__ = EpochSeededRepeatSampler  # same arguments, resumable order
        return sampler

    # -- rollouts --------------------------------------------------------------------------------

    def _roll_out(self, prompts: list[dict]) -> tuple[list[Session], list[list[list[int] | None]]]:
        sessions = [open_session(p, self.session_settings) for p in prompts]
        if self.use_vllm:
            recorder = TokenRecorder(self._vllm_engine())
            run_sessions(sessions, recorder)
        else:
            with unwrap_model_for_generation(self.model_wrapped, self.accelerator,
                                             gather_deepspeed3_params=self.args.ds3_gather_for_generation,
                                             gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs
                                             ) as policy:
                training = policy.training  # the engine switches the model to eval mode
                recorder = TokenRecorder(TransformersEngine(
                    policy, processor=self.rollout_processor, device=str(self.accelerator.device),
                    temperature=self.temperature, top_p=self.top_p))
                try:
                    run_sessions(sessions, recorder)
                finally:
                    policy.train(training)
        return sessions, [recorder.turns.get(s.key, []) for s in sessions]

    def _vllm_engine(self):
        """vLLM as TRL runs it, weights synced once per optimizer step. Untested here (no GPU):
        kept to the core's request building and TRL's sync."""
        if self.state.global_step != self._last_loaded_step:
            self.vllm_generation.sync_weights()
            self._last_loaded_step = self.state.global_step
        if self.vllm_mode == "colocate":
            return ColocatedVLLM(self.vllm_generation.llm, self.temperature, self.top_p)
        base = self.args.vllm_server_base_url or f"http://{self.args.vllm_server_host}:{self.args.vllm_server_port}"
        # the server returns text only: turns are re-tokenised for the loss
        return OpenAIEngine(get_config_model_id(self.model.config), base_url=f"{base}/v1",
                            temperature=self.temperature, top_p=self.top_p)

    # -- the batch TRL's loss consumes -----------------------------------------------------------

    def _generate_and_score_completions(self, inputs: list[dict]) -> dict[str, Any]:
        device = self.accelerator.device
        mode = "train" if self.model.training else "eval"
        group = self.num_generations if mode == "train" else self.num_generations_eval
        sessions, turn_ids = self._roll_out(inputs)

        # Rewards of the whole batch: groups may span processes, so normalise after gathering.
        per_func = torch.tensor([func(sessions, inputs) for func in self.reward_funcs], device=device).T
        per_func = self.accelerator.gather(per_func.float().contiguous())
        rewards = (per_func * self.reward_weights.to(device)).sum(dim=1)
        advantages, flat = group_advantages(rewards, group)
        mine = slice(self.accelerator.process_index * len(inputs), (self.accelerator.process_index + 1) * len(inputs))

        batch = collate_rollouts([encode_rollout(self.rollout_processor, s, ids) for s, ids in zip(sessions, turn_ids)],
                                 self._tokenizer.pad_token_id)
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        batch["advantages"] = advantages[mine]
        generated = batch["completion_mask"] * batch["tool_mask"]
        batch["num_items_in_batch"] = self.accelerator.gather(generated.sum()).sum()  # the dapo token mean
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            if self.needs_old_logps:
                batch["old_per_token_logps"] = self._completion_logps(self.model, batch)
            if self.beta != 0.0:
                batch["ref_per_token_logps"] = self._completion_logps(self.ref_model, batch)

        self._log_rollouts(mode, sessions, inputs, per_func, rewards, flat)
        return batch

    def _completion_logps(self, model, batch: dict) -> torch.Tensor:
        logps, _, _ = self._get_per_token_logps_and_entropies(
            model, torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1),
            torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1), batch["completion_ids"].size(1),
            batch_size=self.args.per_device_train_batch_size, pixel_values=batch["pixel_values"],
            image_grid_thw=batch["image_grid_thw"], num_images=batch["num_images"],
            mm_token_type_ids=batch["mm_token_type_ids"])
        return logps

    def _log_rollouts(self, mode: str, sessions: list[Session], prompts: list[dict], per_func: torch.Tensor,
                      rewards: torch.Tensor, flat: torch.Tensor) -> None:
        scores = [score_rollout(s, p) for s, p in zip(sessions, prompts)]
        columns = {
            "rollout/accuracy": [sc.accuracy for sc in scores],
            "rollout/format": [sc.format for sc in scores],
            "rollout/reflection": [float(sc.reflective) for sc in scores],
            "rollout/follows_thought": [float(sc.follows_thought) for sc in scores],
            "rollout/calls": [s.calls for s in sessions],
            "rollout/images_drawn": [len(s.images) - len(s.inputs) for s in sessions],
            "rollout/completion_tokens": [s.completion_tokens for s in sessions],
            **{f"finish/{reason}": [float(s.finish_reason == reason) for s in sessions] for reason in FINISH_REASONS},
        }
        local = torch.tensor(list(columns.values()), dtype=torch.float32, device=self.accelerator.device).T
        means = self.accelerator.gather(local.contiguous()).mean(dim=0).tolist()
        metrics = self._metrics[mode]
        for name, value in zip(columns, means):
            metrics[name].append(value)
        metrics["reward"].append(rewards.mean().item())
        metrics["reward_std"].append(rewards.std().item())
        metrics["frac_reward_zero_std"].append(flat.float().mean().item())
        if len(self.reward_funcs) > 1:
            for name, value in zip(self.reward_func_names, per_func.mean(dim=0).tolist()):
                metrics[f"rewards/{name}"].append(value)


def build_trainer(config: Config) -> DrawingGRPOTrainer:
    out = Path(config.out)
    # the launcher's world size: the process group does not exist before GRPOConfig builds it
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    args = GRPOConfig(output_dir=str(out), **deepspeed_on_cpu(config.trainer | batch_keys(config, world_size)))
    if args.use_vllm and (args.vllm_importance_sampling_correction or args.vllm_enable_sleep_mode):
        raise ValueError("with our rollouts, set vllm_importance_sampling_correction and vllm_enable_sleep_mode "
                         "to false (the engines return no sampling log-probs; sleep mode is not wired)")
    prompts, report = on_main_process(lambda: load_prompts(config.data, config.images_root, config.validation_workers))
    if not prompts:
        raise ValueError(f"no valid prompt in {config.data}: {report.to_json()['skipped']}")
    if PartialState().is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        report.write(out / REPORT_NAME)

    model = AutoModelForImageTextToText.from_pretrained(config.model, dtype=torch.float32)
    if config.freeze_vision:
        freeze_vision(model)
    return DrawingGRPOTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(prompts),
        processing_class=load_processor(config.model),  # saved with every checkpoint as it came
        rollout_processor=load_processor(config.model, max_pixels=NO_RESIZE_MAX_PIXELS),
        sessions=SessionSettings.for_policy(config.model, config.max_pixels, config.system_prompt,
                                            config.max_new_tokens, config.max_total_tokens),
        reward_funcs=(vilasr_reward_from_thought if config.answer_from_thought else vilasr_reward,),
        callbacks=[MetricsLog(out / METRICS_NAME)],
    )


def train(config: Config) -> Path:
    out = Path(config.out)
    trainer = build_trainer(config)
    checkpoint = latest_checkpoint(out) if config.resume else None
    if config.resume:
        log.info("resuming from %s", checkpoint or "scratch (no checkpoint yet)")
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(str(out))
    copy_profile(config.model, out)
    log.info("model saved to %s", out)
    return out
