"""Shared by the SFT tests: a recorded drawing trajectory written as ViLaSR-data, and how to run
the training CLI in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw

from ros_vilasr.core.driver import run_sessions
from ros_vilasr.core.engines.replay import ReplayEngine
from ros_vilasr.core.session import Session

REPO = Path(__file__).resolve().parents[1]
DRAW = ('<think>Mark the cup.</think>\nAction: Object Mapper\n```json\n'
        '[{"index": 1, "bbox_2d": [28, 28, 84, 84], "label": "cup"}]\n```')
ANSWER = "<think>It is on the left.</think>\nAction: Answer\n<answer>A</answer>"


def scene() -> Image.Image:
    image = Image.new("RGB", (224, 168), "white")
    ImageDraw.Draw(image).rectangle((30, 30, 80, 80), fill="red")
    return image


def new_session() -> Session:
    return Session([scene()], "Is the cup on the left or the right?", options=["A. left", "B. right"],
                   problem_type="multiple choice")


def recorded_session(turns: tuple[str, ...] = (DRAW, ANSWER)) -> Session:
    """The dialogue the tiny model is taught: system, user + image, drawing turn, feedback with the
    drawn image, answer (``turns``: the model's turns)."""
    session = new_session()
    run_sessions([session], ReplayEngine([{"conversations": [{"role": "assistant", "content": t} for t in turns]}]))
    return session


def write_trajectory(root: Path, name: str = "traj", turns: tuple[str, ...] = (DRAW, ANSWER)) -> dict:
    """The recorded dialogue as a ViLaSR-data record; its images saved under ``root/name/``."""
    session = recorded_session(turns)
    (root / name).mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(session.images):
        image.save(root / name / f"{i}.png")
        paths.append(f"{name}/{i}.png")
    return {"conversations": session.conversations(), "images": paths}


def write_data(path: Path, records: list) -> Path:
    path.write_text(json.dumps(records, indent=1))
    return path


def env() -> dict:
    """The environment of a training subprocess: this checkout importable, ROS isolation inherited."""
    paths = [str(REPO), str(REPO / "training"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths))}


def train_command(tiny: Path, data: Path, out: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "vilasr_train.cli", "sft", "--config", "sft_cpu_toy", "--model", str(tiny),
            "--data", str(data), "--out", str(out), *flags]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def killed_after_first_line(argv: list[str], samples: Path, timeout: float = 120.0) -> int:
    """Run ``vilasr-train *argv`` in a subprocess, SIGKILL it once ``samples`` holds a whole line,
    and return how many whole lines it holds then."""
    run = subprocess.Popen([sys.executable, "-m", "vilasr_train.cli", *argv], env=env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while not (samples.exists() and samples.read_bytes().count(b"\n") >= 1):
        assert run.poll() is None, run.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "nothing sampled in time"
        time.sleep(0.02)
    run.send_signal(signal.SIGKILL)
    run.wait()
    return samples.read_bytes().count(b"\n")
