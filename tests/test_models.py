"""Model names and checkpoint checks: ``embedded`` resolves to the shipped weights, and a model
that cannot load gives one clear error naming the file (and, for the shipped model, the command
that rebuilds it) before anything tries to load it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from ros_vilasr.core import models
from ros_vilasr.core.models import (
    EMBEDDED_DIR,
    ModelFilesError,
    check_model_dir,
    copy_profile,
    image_position,
    resolve_model,
    run_profile,
    system_prompt_of,
)
from ros_vilasr.core.session import Session


@pytest.fixture
def checkpoint(tmp_path):
    """A copy of the shipped model's files (a real, loadable checkpoint)."""
    target = tmp_path / "ckpt"
    shutil.copytree(EMBEDDED_DIR, target)
    return target


def test_embedded_resolves_to_the_shipped_directory_and_its_profile():
    assert resolve_model("embedded") == str(EMBEDDED_DIR)
    profile = run_profile("embedded")
    assert profile["max_pixels"] == 200704 and profile["temperature"] == 0.0 and profile["max_new_tokens"] > 0
    assert run_profile("org/some-hub-model") == {}


def test_hub_ids_pass_and_missing_paths_are_named():
    assert resolve_model("AntResearchNLP/ViLaSR") == "AntResearchNLP/ViLaSR"
    for name in ("./runs/nothing", "/no/such/dir", "runs/a/b"):
        with pytest.raises(ModelFilesError, match="no model directory"):
            resolve_model(name)


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "model.safetensors").unlink(), "model.safetensors is missing"),
    (lambda d: (d / "tokenizer.json").unlink(), "tokenizer.json is missing"),
    (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:5000]),
     "model.safetensors is corrupt"),
    (lambda d: (d / "model.safetensors").write_bytes(b"not a safetensors file at all"), "model.safetensors is corrupt"),
    (lambda d: (d / "config.json").write_text("{broken"), "config.json is not a readable JSON config"),
    (lambda d: (d / "config.json").write_text(json.dumps({"model_type": "llama"})), "holds a 'llama' model"),
])
def test_damaged_checkpoints_are_refused_with_the_file_named(checkpoint, damage, message):
    check_model_dir(checkpoint)  # intact: passes
    damage(checkpoint)
    with pytest.raises(ModelFilesError, match=message):
        resolve_model(str(checkpoint))


def test_damaged_shipped_weights_name_the_rebuild_command(checkpoint, monkeypatch):
    (checkpoint / "model.safetensors").write_bytes(b"\0" * 100)
    monkeypatch.setattr(models, "EMBEDDED_DIR", checkpoint)
    with pytest.raises(ModelFilesError, match="vilasr-train recipe recipe_embedded") as err:
        resolve_model("embedded")
    assert str(checkpoint / "model.safetensors") in str(err.value)


def test_cli_answers_a_bad_model_with_one_line(tmp_path):
    image = tmp_path / "frame.png"
    from PIL import Image

    Image.new("RGB", (64, 64)).save(image)
    done = subprocess.run([sys.executable, "-m", "ros_vilasr.cli", "ask", "Where?", "--image", str(image),
                           "--model", str(tmp_path / "missing")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"vilasr: error: no model directory '{tmp_path / 'missing'}' "
                                                "(and not a hub id of the form org/name)"]


def test_a_trained_model_keeps_the_profile_layout_and_system_prompt_of_the_one_it_came_from(tmp_path):
    source, target = tmp_path / "source", tmp_path / "target"
    source.mkdir()
    assert image_position(str(source)) == "first"  # no profile: the protocol's layout
    assert system_prompt_of(run_profile(str(source))) is None  # ... and the protocol's system prompt
    copy_profile(source, target)
    assert not target.exists()
    (source / "vilasr_model.json").write_text('{"max_pixels": 200704, "image_position": "last"}')
    (source / "system_prompt.txt").write_text("Draw, then answer. Image 1 is {width}x{height}.")
    copy_profile(source, target)
    assert run_profile(str(target)) == {"max_pixels": 200704, "image_position": "last",
                                        "system_prompt_file": str(target / "system_prompt.txt")}
    assert image_position(str(target)) == "last"
    own = system_prompt_of(run_profile(str(target)))
    session = Session([Image.new("RGB", (112, 56))], "Where?", system_prompt_path=own)
    assert session.conversations()[0]["content"] == "Draw, then answer. Image 1 is 112x56."


def test_cli_prompts_a_model_with_its_own_system_prompt_unless_given_one(checkpoint, tmp_path):
    Image.new("RGB", (112, 112)).save(tmp_path / "frame.png")
    (checkpoint / "system_prompt.txt").write_text("Own prompt, {width}x{height}.")
    (tmp_path / "given.txt").write_text("Given prompt, {width}x{height}.")
    systems = []
    for flags, out in [([], "own"), (["--system-prompt-file", str(tmp_path / "given.txt")], "given")]:
        subprocess.run([sys.executable, "-m", "ros_vilasr.cli", "ask", "Where?", "--image", str(tmp_path / "frame.png"),
                        "--model", str(checkpoint), "--max-calls", "1", "--max-new-tokens", "4",
                        "--out", str(tmp_path / out), *flags], check=True, capture_output=True, timeout=300)
        systems.append(json.loads((tmp_path / out / "trace.json").read_text())["conversations"][0]["content"])
    assert systems == ["Own prompt, 112x112.", "Given prompt, 112x112."]
