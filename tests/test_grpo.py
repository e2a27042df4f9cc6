"""Stage 3 GRPO on CPU with the tiny model: loss mask, drawn images in the loss forward pass,
gradients, a reward that rises on a toy task (reproducibly), resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, TrainerCallback
from vilasr_train import grpo
from vilasr_train.cli import build_parser
from vilasr_train.config import load_config
from vilasr_train.rewards import score_rollout
from vilasr_train.rollout import SessionSettings, TokenRecorder, encode_rollout, normalise_prompt, open_session

from ros_vilasr.core import prompts
from ros_vilasr.core.driver import run_sessions
from ros_vilasr.core.encoding import encode_dialogue
from ros_vilasr.core.images import NO_RESIZE_MAX_PIXELS
from ros_vilasr.core.processor import load_processor
from ros_vilasr.core.session import Reply
from ros_vilasr.core.tiny_model import build_tiny_model

SYSTEM = "You answer spatial questions about an image of {width}x{height} pixels."
QUESTION = {"question": "Which colour is the square?", "options": ["A. red", "B. blue"], "answer": "A",
            "question_type": "multiple choice", "image_path": "red.png", "data_type": "single_view"}
ANSWER = "<think> done </think>\nAction: Answer\n<answer>{}</answer>"
# Three images drawn in two turns: image 2 from image 1, then images 3 and 4 from images 2 and 1.
DRAWING = [
    '<think> mark it </think>\nAction: Object Mapper\n```json\n'
    '[{"index": 1, "bbox_2d": [4, 4, 40, 40], "label": "box"}]\n```',
    '<think> check it </think>\nAction: Path Tracer\n```json\n'
    '[{"index": 2, "start_point_2d": [4, 4], "end_point_2d": [40, 40], "label": "path"}, '
    '{"index": 1, "start_point_2d": [8, 8], "end_point_2d": [30, 50], "label": "other"}]\n```',
]


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    """Tiny model, a 56x56 red square, four prompts whose answer is A, a short system prompt, and
    an SFT'd copy of the model that answers A or B about equally often (it starts partly right)."""
    root = tmp_path_factory.mktemp("grpo")
    build_tiny_model(root / "tiny")
    Image.new("RGB", (56, 56), (200, 30, 30)).save(root / "red.png")
    (root / "system.txt").write_text(SYSTEM)
    (root / "prompts.jsonl").write_text("".join(json.dumps(QUESTION) + "\n" for _ in range(4)))

    processor = load_processor(root / "tiny", max_pixels=NO_RESIZE_MAX_PIXELS)
    model = AutoModelForImageTextToText.from_pretrained(root / "tiny")
    prompt = normalise_prompt(QUESTION, "toy", root)
    examples = []
    for letter in "AB":
        session = open_session(prompt, settings(root))
        session.submit(Reply(ANSWER.format(letter)))
        examples.append(encode_dialogue(processor, session.messages, session.images))
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(120):
        enc = examples[step % 2]
        labels = torch.tensor([enc.input_ids]).masked_fill(torch.tensor([enc.loss_mask]) == 0, -100)
        model(**enc.model_inputs(), labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(root / "sft")
    load_processor(root / "tiny").save_pretrained(root / "sft")
    return root


def settings(root: Path) -> SessionSettings:
    return SessionSettings(max_pixels=200704, system_prompt=str(root / "system.txt"), max_new_tokens=96,
                           max_total_tokens=256)


def config(root: Path, out: str, **overrides) -> grpo.Config:
    return load_config(grpo.Config, "grpo_cpu_toy", {
        "model": str(root / "sft"), "data": [str(root / "prompts.jsonl")], "out": str(root / out),
        "system_prompt": str(root / "system.txt"), "report_to": "none", **overrides})


class ScriptedEngine:
    """Plays ``DRAWING`` then an answer in every session: the n-th session seen answers
    ``answers[n % len(answers)]`` (a letter, or a whole answer turn). Token ids are the tokenizer's,
    closed by ``<|im_end|>``."""

    def __init__(self, processor, answers=("A",)):
        self.tokenizer, self.answers, self.order = processor.tokenizer, answers, {}
        self.end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")

    def generate(self, requests, cancel=None):
        replies = []
        for r in requests:
            n = self.order.setdefault(r.key, len(self.order))
            turn = sum(m["role"] == "assistant" for m in r.messages)
            last = self.answers[n % len(self.answers)]
            text = DRAWING[turn] if turn < len(DRAWING) else last if last.startswith("<think>") else ANSWER.format(last)
            replies.append(Reply(text, token_ids=self.tokenizer.encode(text, add_special_tokens=False) + [self.end]))
        return replies

    def close(self):
        pass


@pytest.fixture
def scripted(monkeypatch):
    """Make the trainer's rollouts scripted: ``scripted(answers)``; returns the sessions it ran."""
    sessions = []

    def install(answers=("A",)):
        def engine(policy, processor, **_):
            return ScriptedEngine(processor, answers)
        monkeypatch.setattr(grpo, "TransformersEngine", engine)
        original = grpo.DrawingGRPOTrainer._roll_out

        def roll_out(self, prompts):
            result = original(self, prompts)
            sessions.extend(result[0])
            return result
        monkeypatch.setattr(grpo.DrawingGRPOTrainer, "_roll_out", roll_out)
        return sessions
    return install


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / grpo.METRICS_NAME).read_text().splitlines()]


# -- rewards and advantages --------------------------------------------------------------------


def test_rewards_follow_the_spec(toy):
    prompt = normalise_prompt(QUESTION, "toy", toy)

    def played(*turns):
        session = open_session(prompt, settings(toy))
        for text in turns:
            session.submit(Reply(text))
        return score_rollout(session, prompt)

    assert played(DRAWING[0], ANSWER.format("A")).reward == 1.0
    assert played(DRAWING[0], ANSWER.format("B")).reward == 0.0
    assert played("<answer>A</answer>").reward == 0.5  # right, badly formed
    tool_error = played('<think> x </think>\nAction: Object Mapper\n```json\n[]\n```')
    assert tool_error.reward == 0.0 and tool_error.accuracy == 0.0
    cut = open_session(prompt, settings(toy))
    cut.submit(Reply(ANSWER.format("A"), finish="length"))
    assert cut.finish_reason == "length" and score_rollout(cut, prompt).reward == 0.0
    moved = DRAWING[0].replace("[4, 4, 40, 40]", "[2, 2, 30, 30]").replace('"index": 1', '"index": 2')
    redrawn = played(DRAWING[0], moved, ANSWER.format("A"))
    assert redrawn.reflective and not played(DRAWING[0], ANSWER.format("A")).reflective

    # answer_from_thought: a right letter that is not the option the final thought concludes with
    # is luck (reward 0); the paper's reward credits it; a thought that names no option is taken at its answer
    def concluding(thought, letter, **flags):
        session = open_session(prompt, settings(toy))
        session.submit(Reply(f"<think> {thought} </think>\nAction: Answer\n<answer>{letter}</answer>"))
        return score_rollout(session, prompt, **flags)

    lucky = "The square looks blue, so the answer is B."
    assert concluding(lucky, "A").reward == 1.0 and not concluding(lucky, "A").follows_thought
    assert concluding(lucky, "A", answer_from_thought=True).reward == 0.0
    assert concluding("It is red: option A.", "A", answer_from_thought=True).reward == 1.0
    assert concluding("Option B? No, option A.", "A", answer_from_thought=True).reward == 1.0  # the last one named
    assert concluding("It is red.", "A", answer_from_thought=True).reward == 1.0

    advantages, flat = grpo.group_advantages(torch.tensor([1.0, 0.0, 0.5, 0.5, 0.1, 0.1, 0.1, 0.1]), 4)
    assert flat.tolist() == [False, True]
    assert advantages[4:].tolist() == [0.0] * 4  # equal rewards: exactly zero, round-off included
    assert advantages[:4].sum().abs() < 1e-6 and advantages[0] > advantages[2] > advantages[1]


def test_configs_and_cli(toy):
    paper = load_config(grpo.Config, "grpo_paper", {"model": "M", "data": ["p.jsonl"], "out": "o"})
    assert grpo.batch_keys(paper, 8) == {"generation_batch_size": 256, "gradient_accumulation_steps": 8}
    assert grpo.batch_keys(paper, 32) == {"generation_batch_size": 256, "gradient_accumulation_steps": 2}
    assert not paper.freeze_vision and paper.max_pixels == 200704
    trainer_keys = paper.trainer
    assert (trainer_keys["beta"], trainer_keys["epsilon"], trainer_keys["epsilon_high"]) == (0.0, 0.2, 0.3)
    assert (trainer_keys["learning_rate"], trainer_keys["weight_decay"]) == (1e-6, 1e-2)
    assert trainer_keys["lr_scheduler_type"] == "constant" and trainer_keys["deepspeed"].endswith("ds_zero3.json")
    with pytest.raises(ValueError, match="do not split"):
        grpo.batch_keys(paper, 3)
    args = build_parser().parse_args(["grpo", "--config", "grpo_cpu_toy", "--prompts", "p.jsonl",
                                      "--model", "M", "--out", "o", "--resume"])
    assert (args.module, args.data, args.resume) == ("vilasr_train.grpo", ["p.jsonl"], True)


# -- the loss sees exactly what the model generated, and every image ---------------------------


def test_loss_mask_covers_exactly_the_generated_tokens(toy):
    processor = load_processor(toy / "tiny", max_pixels=NO_RESIZE_MAX_PIXELS)
    session = open_session(normalise_prompt(QUESTION, "toy", toy), settings(toy))
    recorder = TokenRecorder(ScriptedEngine(processor))
    run_sessions([session], recorder)
    assert session.finish_reason == "answer" and len(session.images) == 4  # 1 input, 3 drawn

    turns = recorder.turns[session.key]
    row = encode_rollout(processor, session, turns)
    completion, mask = torch.tensor(row["completion_ids"]), torch.tensor(row["tool_mask"])
    assert completion[mask == 1].tolist() == [t for turn in turns for t in turn]
    assert processor.tokenizer.decode(row["prompt_ids"]).endswith("<|im_start|>assistant\n")
    # masked out: the feedback turns with the drawn images' placeholders, and the turn headers
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert (completion == image_pad).sum() > 0 and mask[completion == image_pad].sum() == 0
    context = processor.tokenizer.decode(completion[mask == 0].tolist())
    assert "The index of the given image is 4" in context and context.count("<|im_start|>user") == 2
    assert row["image_grid_thw"].shape[0] == 4


def test_drawn_images_reach_the_loss_forward_pass(toy, scripted):
    sessions = scripted()
    trainer = grpo.build_trainer(config(toy, "images", max_steps=1, prompts_per_update=4))
    model = trainer.model
    forward, seen = model.forward, []

    def spy(*args, **kwargs):
        if torch.is_grad_enabled() and kwargs.get("fused_lm_head"):  # the loss forward pass
            seen.append({k: kwargs[k] for k in ("input_ids", "pixel_values", "image_grid_thw", "mm_token_type_ids")})
        return forward(*args, **kwargs)
    model.forward = spy
    trainer.train()

    assert len(sessions) == 16 and all(len(s.images) == 4 for s in sessions)
    assert seen, "no loss forward pass"
    grids = torch.cat([b["image_grid_thw"] for b in seen])
    assert grids.shape[0] == sum(len(s.images) for s in sessions) == 64  # drawn images included
    assert sum(b["pixel_values"].shape[0] for b in seen) == int(grids.prod(dim=1).sum())
    for b in seen:  # one placeholder per merged 2x2 patch group, for every image
        assert int(b["mm_token_type_ids"].sum()) == int(b["image_grid_thw"].prod(dim=1).sum()) // 4
    # the last drawn image's pixels are those of the session's own image (the fast image path
    # equals the Hugging Face processor within float rounding)
    last = trainer.rollout_processor.image_processor(images=[sessions[0].images[-1]], return_tensors="pt")
    rows = int(last["image_grid_thw"].prod())
    assert any(torch.allclose(b["pixel_values"][i:i + rows], last["pixel_values"], rtol=0, atol=1e-5)
               for b in seen for i in range(0, b["pixel_values"].shape[0] - rows + 1, rows))


def test_rollouts_follow_the_policys_prompt_layout_and_the_model_keeps_its_profile(toy, scripted, tmp_path):
    policy = tmp_path / "policy"
    shutil.copytree(toy / "sft", policy)
    (policy / "vilasr_model.json").write_text('{"max_pixels": 200704, "image_position": "last"}')
    sessions = scripted()
    out = grpo.train(config(toy, "layout", model=str(policy), max_steps=1, prompts_per_update=4))
    first_turns = {json.dumps(s.messages[1]["content"]) for s in sessions}
    assert len(sessions) == 16 and first_turns == {json.dumps(prompts.first_user_content(
        QUESTION["question"], [(56, 56)], QUESTION["options"], "multiple choice", image_position="last"))}
    assert (out / "vilasr_model.json").read_text() == (policy / "vilasr_model.json").read_text()


# -- gradients ---------------------------------------------------------------------------------


class GradientProbe(TrainerCallback):
    """The gradients at the first optimizer step."""

    def __init__(self):
        self.grads = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.grads is None:
            self.grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("answers,moves", [(("A", "B"), True), (("A",), False)], ids=["mixed", "all-right"])
def test_gradient_only_from_groups_with_different_rewards(toy, scripted, answers, moves):
    scripted(answers)
    trainer = grpo.build_trainer(config(toy, f"grad-{moves}", max_steps=1, prompts_per_update=4,
                                        learning_rate=1e-2))
    probe = GradientProbe()
    trainer.add_callback(probe)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    changed = [n for n in before if not torch.equal(before[n], after[n].detach())]
    nonzero = [n for n, g in probe.grads.items() if g.abs().sum() > 0]
    logged = next(m for m in metrics(toy / f"grad-{moves}") if "reward" in m)
    if moves:
        assert logged["reward"] == 0.5 and logged["frac_reward_zero_std"] == 0.0
        assert nonzero and changed
        assert any(n.startswith("model.visual") for n in nonzero)  # the vision tower learns too
    else:
        assert logged["reward"] == 1.0 and logged["frac_reward_zero_std"] == 1.0
        assert probe.grads and not nonzero and not changed


# -- learning, reproducibility, resume ---------------------------------------------------------


def test_answer_from_thought_is_the_reward_trained_on(toy, scripted):
    """With the config key, a right letter whose thought named another option earns nothing."""
    lucky = "<think> It looks blue: option B. </think>\nAction: Answer\n<answer>A</answer>"
    scripted((ANSWER.format("A"), lucky))
    for flag, reward in ((False, 1.0), (True, 0.5)):
        grpo.train(config(toy, f"from-thought-{flag}", max_steps=1, prompts_per_update=4, answer_from_thought=flag))
        logged = next(m for m in metrics(toy / f"from-thought-{flag}") if "reward" in m)
        assert logged["reward"] == reward and logged["rollout/accuracy"] == 1.0
        assert logged["rollout/follows_thought"] == 0.5


def reward_curve(out: Path) -> list[tuple[int, float]]:
    return [(m["step"], m["reward"]) for m in metrics(out) if "reward" in m]


def test_reward_rises_reproducibly_and_resumes(toy):
    overrides = {"num_generations": 8, "prompts_per_rollout": 4, "prompts_per_update": 2}
    grpo.train(config(toy, "run", max_steps=24, save_steps=12, report_to="tensorboard", **overrides))
    assert list((toy / "run").rglob("events.out.tfevents.*"))
    curve = reward_curve(toy / "run")
    rewards = [r for _, r in curve]
    assert [s for s, _ in curve] == list(range(1, 24, 2))  # a rollout step feeds two optimizer steps
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert 0.2 < first < 0.7 and last > first + 0.2, rewards

    grpo.train(config(toy, "again", max_steps=4, **overrides))
    assert reward_curve(toy / "again") == curve[:2]  # same seed, same curve

    # a copy of the run stopped at its step-12 checkpoint continues where the run went on
    shutil.copytree(toy / "run" / "checkpoint-12", toy / "resumed" / "checkpoint-12")
    grpo.train(config(toy, "resumed", max_steps=24, resume=True, **overrides))
    assert reward_curve(toy / "resumed") == [(s, r) for s, r in curve if s > 12]
    assert json.loads((toy / "resumed" / "checkpoint-24" / "trainer_state.json").read_text())["global_step"] == 24


def test_the_prompt_order_of_an_epoch_is_the_same_after_a_resume():
    """TRL's sampler shuffles with a generator that only moves on, so a run resumed in epoch e used
    epoch 0's order; ours reseeds per epoch (the trainer calls set_epoch every epoch)."""
    def sampler():
        return grpo.EpochSeededRepeatSampler(list(range(12)), mini_repeat_count=2, batch_size=3, seed=7)

    uninterrupted = sampler()
    orders = []
    for epoch in range(3):
        uninterrupted.set_epoch(epoch)
        orders.append(list(uninterrupted))
    resumed = sampler()
    resumed.set_epoch(2)
    assert list(resumed) == orders[2] and orders[2] != orders[1] != orders[0]
    assert sorted(orders[1][::2]) == list(range(12))  # each prompt once per epoch, twice in a row


def test_a_kl_term_anchors_the_policy_to_the_model_it_started_from(toy, scripted):
    scripted(("A", "B"))  # half right: every group carries a gradient
    out = toy / "kl"
    grpo.train(config(toy, "kl", max_steps=3, prompts_per_update=4, learning_rate=1e-2, beta=0.1))
    kl = [m["kl"] for m in metrics(out) if "kl" in m]
    assert len(kl) == 3
    assert kl[0] == pytest.approx(0.0, abs=1e-6)  # the reference is the starting policy
    assert kl[1] > 1e-4 and kl[2] > 1e-4  # the policy moved away from it, and the loss sees how far
