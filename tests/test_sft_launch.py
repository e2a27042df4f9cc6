"""SFT under launchers, in subprocesses: DeepSpeed ZeRO-2 / ZeRO-3 with two CPU processes
(torchrun, gloo), one rank's batch always without an image, and a run killed after a checkpoint
that resumes from it. The first DeepSpeed run on a fresh machine compiles a communication op once
(~70 s)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file
from sft_helpers import ANSWER, env, free_port, train_command, write_data, write_trajectory
from vilasr_train.checkpoints import latest_checkpoint
from vilasr_train.data import text_alone

from ros_vilasr.core.tiny_model import build_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def data(tmp_path):
    return write_data(tmp_path / "data.json", [write_trajectory(tmp_path, "a"), write_trajectory(tmp_path, "b")])


@pytest.fixture
def mixed(tmp_path):
    """A drawing trajectory and a one-turn question without an image: with one example per rank,
    every step one rank trains on text alone."""
    text = text_alone(write_trajectory(tmp_path, "text", turns=(ANSWER,)))
    return write_data(tmp_path / "mixed.json", [write_trajectory(tmp_path, "a"), text])


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_deepspeed_with_two_cpu_processes(stage, tiny, mixed, tmp_path):
    data, out = mixed, tmp_path / "run"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    command = train_command(tiny, data, out, "--deepspeed", stage, "--set", "use_cpu=false",
                            "--set", "max_steps=2", "--set", "save_steps=2")
    # without the collator's blank image the ranks gather different weights under ZeRO-3 and die
    proc = subprocess.run(launcher + command[1:], env=env(), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shards = sorted(p.name for p in (out / "checkpoint-2" / "global_step2").glob("zero_pp_rank_*_optim_states.pt"))
    assert shards == [f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in (0, 1)]  # both ranks trained
    assert proc.stderr.count("data: kept 2 of 2 records") == 1  # validated once, on the main process
    trained, base = load_file(out / "model.safetensors"), load_file(tiny / "model.safetensors")
    assert all(trained[k].shape == base[k].shape for k in base)  # ZeRO-3 gathered the full weights
    vision = [k for k in base if k.startswith("visual.")]
    assert vision and all((trained[k] == base[k]).all() for k in vision)  # frozen
    assert any((trained[k] != base[k]).any() for k in base if k not in vision)


def test_killed_run_resumes_from_its_last_checkpoint(tiny, data, tmp_path):
    out, total = tmp_path / "run", 30
    command = train_command(tiny, data, out, "--set", f"max_steps={total}", "--set", "save_steps=10",
                            "--set", "log_level=info")
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(command, env=env(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while latest_checkpoint(out) is None and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        first.kill()
        first.wait()
    reached = latest_checkpoint(out)
    assert reached is not None, (tmp_path / "first.log").read_text()[-3000:]
    step = int(reached.rpartition("-")[2])
    assert step < total, "the first run finished before it could be killed"

    second = subprocess.run(command + ["--resume"], env=env(), capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resuming from {reached}" in second.stderr
    assert f"global step {step}" in second.stderr  # the Trainer's own account of where it restarts
    state = json.loads((out / f"checkpoint-{total}" / "trainer_state.json").read_text())
    assert state["global_step"] == total
    losses = {e["step"]: e["loss"] for e in state["log_history"] if "loss" in e}
    assert list(losses) == sorted(losses) and max(losses) == total
    # the weights came back too: training goes on from the checkpoint's loss, not from scratch
    before, after = [losses[s] for s in losses if s <= step], [losses[s] for s in losses if s > step]
    assert after[0] < before[-1]
