"""Stage configuration shared by every training stage: one flat YAML file, every key overridable
from the command line.

A key that names a field of the stage's ``Config`` dataclass is ours (data, model, freezing...);
any other key must be a field of the stage's TRL config class (``SFTConfig``, ``GRPOConfig``...)
and is passed to it verbatim, so the whole TRL / transformers surface (learning_rate,
num_train_epochs, deepspeed, save_steps...) is available without being re-declared here.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import yaml

from ros_vilasr.core.images import MAX_PIXELS_TRAIN

log = logging.getLogger(__name__)

CONFIGS = resources.files("vilasr_train") / "configs"


class InputError(ValueError):
    """Bad input the user can fix (a missing file, an unknown key...): the command line prints the
    message as one line, without a traceback."""
DEEPSPEED_PRESETS = {"zero2": "ds_zero2.json", "zero3": "ds_zero3.json"}


@dataclass
class StageConfig:
    """Options of our own, common to all stages. Stages subclass it, set ``trl_config`` and may add
    fields and ``trainer_defaults`` (defaults for TRL keys that differ from TRL's own)."""

    trl_config: ClassVar[type]
    trainer_defaults: ClassVar[dict[str, Any]] = {}

    model: str = ""  # checkpoint directory or hub id
    out: str = ""  # output directory: checkpoints, final model, logs, data report
    data: list[str] = field(default_factory=list)  # JSON / JSON-lines files
    images_root: str | None = None  # relative image paths resolve here (default: the data file's folder)
    max_pixels: int = MAX_PIXELS_TRAIN  # smart-resize cap of training images (spec §4)
    freeze_vision: bool = True  # vision tower and projector (merger) frozen
    resume: bool = False  # continue from the latest checkpoint-* in `out`, if any
    validation_workers: int = 8  # threads checking image files before training
    trainer: dict[str, Any] = field(default_factory=dict)  # keyword arguments of `trl_config`


def resolve_config_path(name: str) -> Path:
    """A YAML file, or the name of a shipped config (``sft_8gpu``, ``sft_cpu_toy.yaml``...)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = CONFIGS / (name if name.endswith(".yaml") else f"{name}.yaml")
    if shipped.is_file():
        return Path(str(shipped))
    raise InputError(f"no config file {name!r} (shipped: {', '.join(shipped_configs())})")


def shipped_configs() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in CONFIGS.iterdir() if p.name.endswith(".yaml"))


def parse_assignment(text: str) -> tuple[str, Any]:
    """``key=value`` with the value read as YAML (``true``, ``3``, ``[a, b]``, ``null``...)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"expected key=value, got {text!r}")
    return key.strip(), yaml.safe_load(value)


def _coerce(value: Any, default: Any) -> Any:
    # YAML reads 1e-5 as a string (it wants 1.0e-5); a lone value given for a list becomes a list
    if isinstance(default, float) and isinstance(value, (int, str)) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, list) and not isinstance(value, list):
        return [value]
    return value


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def load_config(cls: type[StageConfig], path: str | None = None, overrides: dict[str, Any] | None = None):
    """Build ``cls`` from a YAML file (optional) and overrides (later wins)."""
    values = {}
    if path:
        values = yaml.safe_load(resolve_config_path(path).read_text()) or {}
        if not isinstance(values, dict):
            raise InputError(f"{path}: a config file is a mapping of keys to values")
    values |= overrides or {}
    ours = {f.name: f for f in dataclasses.fields(cls) if f.name != "trainer"}
    theirs = {f.name: f for f in dataclasses.fields(cls.trl_config)}
    config, trainer = cls(), dict(cls.trainer_defaults)
    for key, value in values.items():
        if key in ours:
            setattr(config, key, _coerce(value, _default(ours[key])))
        elif key in theirs:
            trainer[key] = _coerce(value, _default(theirs[key]))
        else:
            close = difflib.get_close_matches(key, [*ours, *theirs], n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise InputError(f"unknown config key {key!r}{hint}")
    if trainer.get("deepspeed") in DEEPSPEED_PRESETS:
        trainer["deepspeed"] = str(CONFIGS / DEEPSPEED_PRESETS[trainer["deepspeed"]])
    config.trainer = trainer
    for name in ("model", "out", "data"):
        if not getattr(config, name):
            raise InputError(f"missing {name!r}: set it in the config file or with --{name}")
    return config


def check_inputs(config: StageConfig) -> None:
    """The files a stage reads exist, before anything is loaded or created."""
    from ros_vilasr.core.models import resolve_model

    for path in config.data:
        if not Path(path).is_file():
            raise InputError(f"data file {path} not found")
    if config.images_root and not Path(config.images_root).is_dir():
        raise InputError(f"images root {config.images_root} is not a folder")
    if not getattr(config, "served_model", False):  # generate names a served model, not a directory
        config.model = resolve_model(config.model)  # a missing or broken checkpoint directory: one clear error
