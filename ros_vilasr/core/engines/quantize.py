"""Weight-only quantization of the language model for the transformers engine (torchao).

Only the decoder's linear layers are quantized: they hold almost all the weights a decode step
reads (6.5 of 8.3 B parameters in Qwen2.5-VL-7B). The vision tower runs once per image and the
output head is tied to the embeddings in small checkpoints, so both stay in full precision.
int8 runs wherever torchao does (CPU and CUDA); int4 needs torchao's CUDA kernels. On a Jetson,
the W4A16 (vLLM) and GGUF (llama.cpp) paths in the README are the better choice.
"""

from __future__ import annotations

QUANTIZATIONS = ("none", "int8", "int4")


class QuantizationUnavailable(RuntimeError):
    """The platform cannot run the requested quantization; the message says why and what to do."""


def quantize(model, scheme: str, device: str):
    """Quantize ``model``'s decoder in place (weight-only) and return it."""
    if scheme not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {scheme!r}; choose one of {', '.join(QUANTIZATIONS)}")
    if scheme == "none":
        return model
    if scheme == "int4" and not str(device).startswith("cuda"):
        raise QuantizationUnavailable(f"int4 weight-only quantization needs a CUDA GPU (torchao's int4 kernels), "
                                      f"not {device}: use int8 here, or a GGUF / W4A16 server (README)")
    try:
        from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig, quantize_
    except ImportError as exc:
        raise QuantizationUnavailable(f"{scheme} quantization needs torchao (pip install torchao): {exc}") from exc
    config = Int4WeightOnlyConfig(group_size=128) if scheme == "int4" else Int8WeightOnlyConfig()
    try:
        quantize_(model.model.language_model, config)
    except (ImportError, RuntimeError, NotImplementedError, ValueError) as exc:
        raise QuantizationUnavailable(f"{scheme} weight-only quantization is not available on {device}: "
                                      f"{type(exc).__name__}: {exc}") from exc
    return model
