"""Weight-only quantization of the transformers engine (torchao, on this CPU): int8 runs and
keeps the shipped model's answers; what the platform cannot run is refused with the reason."""

from __future__ import annotations

import sys

import pytest
import torch

from ros_vilasr.core.driver import run_sessions
from ros_vilasr.core.engines.hf import TransformersEngine
from ros_vilasr.core.engines.quantize import QuantizationUnavailable, quantize
from ros_vilasr.core.models import EMBEDDED, EMBEDDED_DIR, prompting, run_profile
from ros_vilasr.core.session import Budget, Session
from ros_vilasr.demo import layout
from ros_vilasr.synth import scene as sc


def demo_session(key: str) -> Session:
    """The demo's first question on its left camera's reference frame, in the model's layout."""
    question = layout.demo_questions()[0]
    frames = [sc.render(layout.demo_scene(), layout.camera(c, layout.REFERENCE_FRAME))[0] for c in question.cameras]
    return Session(frames, question.question, options=list(question.options), problem_type=question.problem_type,
                   max_pixels=200704, budget=Budget(max_calls=3, max_new_tokens=384), key=key,
                   **prompting(run_profile(EMBEDDED)))


def test_int8_quantizes_the_decoder_and_keeps_the_shipped_models_answer():
    full = TransformersEngine(str(EMBEDDED_DIR), device="cpu", temperature=0.0)
    int8 = TransformersEngine(str(EMBEDDED_DIR), device="cpu", temperature=0.0, quantization="int8")
    decoder = int8.model.model.language_model.layers[0]
    for linear in (decoder.self_attn.q_proj, decoder.mlp.down_proj):
        assert type(linear.weight).__name__ == "Int8Tensor" and linear.weight.qdata.dtype == torch.int8
    assert not type(int8.model.model.visual.blocks[0].mlp.up_proj.weight).__name__.startswith("Int")  # full precision
    assert type(full.model.model.language_model.layers[0].mlp.down_proj.weight) is torch.nn.Parameter
    a, b = run_sessions([demo_session("full")], full)[0], run_sessions([demo_session("int8")], int8)[0]
    assert a.finish_reason == "answer" and b.finish_reason == a.finish_reason and b.calls == a.calls >= 2
    assert b.assistant_turns == a.assistant_turns  # greedy, the same tokens


def test_what_the_platform_cannot_run_is_refused_with_the_reason(monkeypatch):
    model = torch.nn.Module()
    with pytest.raises(QuantizationUnavailable, match="int4 .* needs a CUDA GPU"):
        quantize(model, "int4", "cpu")
    with pytest.raises(ValueError, match="unknown quantization 'fp4'; choose one of none, int8, int4"):
        quantize(model, "fp4", "cpu")
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)  # torchao not installed
    with pytest.raises(QuantizationUnavailable, match=r"int8 quantization needs torchao \(pip install torchao\)"):
        quantize(model, "int8", "cpu")
    assert quantize(model, "none", "cpu") is model
