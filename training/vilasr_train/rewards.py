"""RL rewards of a finished rollout (spec §6), computed from the session the rollout ran in.

reward = 0.5·accuracy + 0.5·format when accuracy > 0, else 0; a rollout that did not end with an
answer (tool error, bad index, too many images, token budget, call budget, engine failure) scores
0 whatever its last turn says. Accuracy and format are the core's (``scoring.rl_accuracy``,
``protocol.format_ok``), so the node, evaluation and training agree on what counts as right.

``answer_from_thought`` (an option of stages 2 and 3, off in the paper's recipe): a
multiple-choice answer that is not the option its final thought concludes with counts as wrong.
A small model's answer letter can be independent of its reasoning; without this, a right letter
reached by luck is kept and rewarded, and the answer collapses onto one letter
(docs/embedded_model.md, "The answer and the thought").
"""

from __future__ import annotations

from dataclasses import dataclass

from ros_vilasr.core.protocol import answer_follows_thought, format_ok
from ros_vilasr.core.scoring import rl_accuracy, rl_reward
from ros_vilasr.core.session import Session


@dataclass(frozen=True)
class RolloutScore:
    accuracy: float
    format: float
    reward: float
    reflective: bool  # some drawing revised an earlier one (spec §6, stage-2 filter)
    follows_thought: bool  # not a multiple-choice answer other than the option its final thought concludes with


def score_rollout(session: Session, prompt: dict, answer_from_thought: bool = False) -> RolloutScore:
    """Score one finished session against its prompt record (``answer``, ``problem_type``)."""
    answered = session.finish_reason == "answer"
    follows = not answered or answer_follows_thought(session.assistant_turns[-1], session.answer,
                                                     prompt["problem_type"])
    right = answered and (follows or not answer_from_thought)
    accuracy = rl_accuracy(session.answer, prompt["answer"], prompt["problem_type"]) if right else 0.0
    well_formed = float(format_ok(session.assistant_turns)) if answered else 0.0
    return RolloutScore(accuracy, well_formed, rl_reward(accuracy, well_formed),
                        reflective=any(step.revises for step in session.steps), follows_thought=follows)


def vilasr_reward(sessions: list[Session], prompts: list[dict]) -> list[float]:
    """The paper's reward, in the trainer's reward-function signature (sessions, prompt records)."""
    return [score_rollout(s, p).reward for s, p in zip(sessions, prompts, strict=True)]


def vilasr_reward_from_thought(sessions: list[Session], prompts: list[dict]) -> list[float]:
    """The paper's reward with ``answer_from_thought``: no credit for a letter its thought did not reach."""
    return [score_rollout(s, p, answer_from_thought=True).reward for s, p in zip(sessions, prompts, strict=True)]
