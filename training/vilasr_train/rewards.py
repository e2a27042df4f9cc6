"""RL rewards of a finished rollout (spec §6), computed from the session the rollout ran in.

reward = 0.5·accuracy + 0.5·format when accuracy > 0, else 0; a rollout that did not end with an
answer (tool error, bad index, too many images, token budget, call budget, engine failure) scores
0 whatever its last turn says. Accuracy and format are the core's (``scoring.rl_accuracy``,
``protocol.format_ok``), so the node, evaluation and training agree on what counts as right.
"""

from __future__ import annotations

from dataclasses import dataclass

from ros_vilasr.core.protocol import format_ok
from ros_vilasr.core.scoring import rl_accuracy, rl_reward
from ros_vilasr.core.session import Session


@dataclass(frozen=True)
class RolloutScore:
    accuracy: float
    format: float
    reward: float
    reflective: bool  # some drawing revised an earlier one (spec §6, stage-2 filter)


def score_rollout(session: Session, prompt: dict) -> RolloutScore:
    """Score one finished session against its prompt record (``answer``, ``problem_type``)."""
    answered = session.finish_reason == "answer"
    accuracy = rl_accuracy(session.answer, prompt["answer"], prompt["problem_type"]) if answered else 0.0
    well_formed = float(format_ok(session.assistant_turns)) if answered else 0.0
    return RolloutScore(accuracy, well_formed, rl_reward(accuracy, well_formed),
                        reflective=any(step.revises for step in session.steps))


def vilasr_reward(sessions: list[Session], prompts: list[dict]) -> list[float]:
    """The paper's reward, in the trainer's reward-function signature (sessions, prompt records)."""
    return [score_rollout(s, p).reward for s, p in zip(sessions, prompts, strict=True)]
