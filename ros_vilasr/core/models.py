"""Which weights a model name means, checked before anything loads them.

``embedded`` is the small draw-to-reason model shipped inside the package (trained from scratch by
``vilasr-train recipe recipe_embedded``); a directory is a local checkpoint; anything else of the
form ``org/name`` is a Hugging Face hub id. A checkpoint directory may carry ``vilasr_model.json``,
its run profile: the pixel and token budgets and the temperature it was trained and evaluated with,
used wherever the caller has not chosen otherwise, and where its first turn puts the images
(``image_position``, see ``prompts.first_user_content``), which every caller follows: a model reads
the layout it was trained on. Beside it, ``system_prompt.txt`` is the system prompt it was trained
with, used wherever no other is given (a small model needs no 400-token tool manual: the recipe
trains the embedded one on a brief prompt).
"""

from __future__ import annotations

import json
from pathlib import Path

EMBEDDED = "embedded"
EMBEDDED_DIR = Path(__file__).resolve().parents[1] / "models" / EMBEDDED
REBUILD_EMBEDDED = "vilasr-train recipe recipe_embedded --out runs/embedded --ship (see training/README.md)"
PROFILE_FILE = "vilasr_model.json"
SYSTEM_PROMPT_FILE = "system_prompt.txt"
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
ARCHITECTURES = ("qwen2_5_vl",)  # the ViLaSR architecture; the protocol and processor assume it


class ModelFilesError(ValueError):
    """A model directory that cannot be loaded: the message names the file and what to do."""


def resolve_model(name: str) -> str:
    """The path or hub id to load for ``name``; local directories are checked first (see
    ``check_model_dir``). Raises ``ModelFilesError``."""
    if name == EMBEDDED:
        check_model_dir(EMBEDDED_DIR, rebuild=REBUILD_EMBEDDED)
        return str(EMBEDDED_DIR)
    path = Path(name).expanduser()
    if path.exists():
        check_model_dir(path)
        return str(path)
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return name  # a hub id
    raise ModelFilesError(f"no model directory {name!r} (and not a hub id of the form org/name)")


def check_model_dir(path: Path, rebuild: str | None = None) -> None:
    """Every file a checkpoint needs is there, readable, and of the ViLaSR architecture."""
    how = f"; rebuild it with: {rebuild}" if rebuild else ""
    if not path.is_dir():
        raise ModelFilesError(f"model directory {path} does not exist{how}")
    for name in REQUIRED_FILES:
        if not (path / name).is_file() and not (name == "model.safetensors" and _sharded(path)):
            raise ModelFilesError(f"{path / name} is missing{how}")
    try:
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelFilesError(f"{path / 'config.json'} is not a readable JSON config ({exc}){how}") from None
    if model_type not in ARCHITECTURES:
        raise ModelFilesError(f"{path} holds a {model_type!r} model; ros_vilasr runs {', '.join(ARCHITECTURES)} "
                              "(Qwen2.5-VL / ViLaSR) checkpoints")
    for weights in [path / "model.safetensors"] if (path / "model.safetensors").is_file() else _sharded(path):
        _check_safetensors(weights, how)


def _sharded(path: Path) -> list[Path]:
    return sorted(path.glob("model-*-of-*.safetensors"))


def _check_safetensors(path: Path, how: str) -> None:
    """The header parses and every tensor's bytes are in the file (catches truncation and garbage
    without reading the weights)."""
    try:
        with path.open("rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size)) if 0 < size < 100 * 2**20 else None
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        ok = isinstance(header, dict) and path.stat().st_size >= 8 + size + end
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        ok = False
    if not ok:
        raise ModelFilesError(f"{path} is corrupt (not a complete safetensors file){how}")


def run_profile(model: str | None) -> dict:
    """The model's ``vilasr_model.json`` (``max_pixels``, ``max_new_tokens``, ``temperature``,
    ``image_position``) plus ``system_prompt_file`` where it has its own system prompt; {} when
    it has neither."""
    if not model:
        return {}
    directory = EMBEDDED_DIR if model == EMBEDDED else Path(model).expanduser()
    try:
        profile = json.loads((directory / PROFILE_FILE).read_text())
    except (OSError, ValueError):
        profile = {}
    profile = profile if isinstance(profile, dict) else {}
    if (directory / SYSTEM_PROMPT_FILE).is_file():
        profile["system_prompt_file"] = str(directory / SYSTEM_PROMPT_FILE)
    return profile


def image_position_of(profile: dict) -> str:
    """Where a model's first turn puts its images, from its run profile: its ``image_position``,
    else the protocol's ``first``."""
    return profile.get("image_position", "first")


def image_position(model: str | None) -> str:
    """``image_position_of`` the model's profile."""
    return image_position_of(run_profile(model))


def system_prompt_of(profile: dict) -> str | None:
    """The system prompt file a model was trained with, from its run profile; None: the protocol's."""
    return profile.get("system_prompt_file")


def prompting(profile: dict) -> dict:
    """``Session`` keywords that prompt a model as it was trained, from its run profile."""
    return {"image_position": image_position_of(profile), "system_prompt_path": system_prompt_of(profile)}


def copy_profile(source: str | Path, target: str | Path) -> None:
    """A model trained from ``source`` keeps its run profile (budgets and prompt layout) and its
    system prompt."""
    for name in (PROFILE_FILE, SYSTEM_PROMPT_FILE):
        path = Path(source).expanduser() / name
        if path.is_file():
            Path(target).mkdir(parents=True, exist_ok=True)
            (Path(target) / name).write_text(path.read_text())
