"""Engines: one small interface, four back ends. Heavy back ends are imported only when chosen."""

from __future__ import annotations

import threading
from typing import Protocol

from ..session import Reply, Request

ENGINES = ("transformers", "vllm", "openai", "replay")


class Engine(Protocol):
    """Generates one assistant turn for each request (a batch), in order. In-process engines may
    also offer ``warm_up()`` (one throwaway generation, called when a node activates)."""

    def generate(self, requests: list[Request], cancel: threading.Event | None = None) -> list[Reply]:
        ...

    def forget(self, key: str) -> None:
        """Drop what the engine keeps for a finished dialogue (called by the driver; optional)."""

    def close(self) -> None:
        """Release the model (and its GPU memory)."""


def check_engine(name: str, model: str | None = None, **options) -> None:
    """What can be checked without loading the model: its files and, for transformers, that the
    device exists. A node runs this in its activation, so that fails at once with the reason,
    and loads the model off the executor afterwards."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    if name in ("transformers", "vllm") and isinstance(model, str):
        from ..models import resolve_model

        resolve_model(model)
    if name == "transformers":
        from .hf import check_device
        check_device(options.get("device", "auto"))


def create_engine(name: str, model: str | None = None, **options) -> Engine:
    """Build an engine by name. ``model``: checkpoint path / hub id / ``embedded`` (checked by
    ``models.resolve_model`` before loading), server model name, or (for replay) a transcript file."""
    if name in ("transformers", "vllm") and isinstance(model, str):
        from ..models import resolve_model

        model = resolve_model(model)
    if name == "transformers":
        from .hf import TransformersEngine
        return TransformersEngine(model, **options)
    if name == "vllm":
        from .vllm import VLLMEngine
        return VLLMEngine(model, **options)
    if name == "openai":
        from .openai import OpenAIEngine
        return OpenAIEngine(model, **options)
    if name == "replay":
        from .replay import ReplayEngine
        return ReplayEngine.from_file(model, **options)
    raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")


def warm_up(engine: Engine) -> None:
    """Pay first-call costs now (lazy imports, the image resize path, kernel set-up), so that a
    node's first question costs what its tenth does: the engine's own ``warm_up`` where it has one
    (it runs a whole session), else the image path every session takes."""
    if hasattr(engine, "warm_up"):
        engine.warm_up()
        return
    from PIL import Image

    from ..images import prepare_image

    prepare_image(Image.new("RGB", (56, 56)))
