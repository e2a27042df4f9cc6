"""The tiny Qwen2.5-VL checkpoint and the torchvision-free processor loader."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jinja2
import pytest
import torch
from PIL import Image

from ros_vilasr.core.processor import load_processor
from ros_vilasr.core.tiny_model import CHAT_TEMPLATE_PATH

REPO = Path(__file__).resolve().parents[1]
TURN = (
    "<think> The chair is left of the table; I will mark both. </think>\nAction: Object Mapper\n"
    '```json\n[{"index": 1, "bbox_2d": [10, 20, 30, 40], "label": "chair"}, '
    '{"index": 2, "bbox_2d": [110, 120, 230, 340], "label": "table"}]\n```'
)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "model"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "ros_vilasr.cli", "tiny-model", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    # Last line: the output path (imported libraries, e.g. DeepSpeed, may log to stdout first).
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    assert time.monotonic() - t0 < 60
    assert sum(f.stat().st_size for f in out.iterdir()) < 1_000_000
    return out


def _images() -> list[Image.Image]:
    return [Image.new("RGB", (200, 150), (200, 30, 30)), Image.new("RGB", (120, 90), (30, 30, 200))]


def _chat(images=(None, None)) -> list[dict]:
    def image(im):
        return {"type": "image"} if im is None else {"type": "image", "image": im}

    return [
        {
            "role": "user",
            "content": [
                image(images[0]),
                {"type": "text", "text": "The index of the given image is 1 (width: 196, height: 140)."},
                image(images[1]),
                {
                    "type": "text",
                    "text": "The index of the given image is 2 (width: 112, height: 84).\n"
                    "Which object is closer, A. chair or B. table?",
                },
            ],
        },
    ]


def _inputs(processor, images):
    text = processor.apply_chat_template(_chat(), add_generation_prompt=True, tokenize=False)
    return processor(text=[text], images=images, return_tensors="pt")


def test_generate_with_two_images(tiny_dir):
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_dir).eval()
    processor = load_processor(tiny_dir)
    assert 100_000 < sum(p.numel() for p in model.parameters()) < 400_000
    tok = processor.tokenizer
    cfg = model.config
    assert tok.convert_tokens_to_ids("<|image_pad|>") == cfg.image_token_id == processor.image_token_id
    assert tok.convert_tokens_to_ids("<|video_pad|>") == cfg.video_token_id
    assert tok.convert_tokens_to_ids("<|vision_start|>") == cfg.vision_start_token_id
    assert tok.convert_tokens_to_ids("<|vision_end|>") == cfg.vision_end_token_id
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.eos_token_id == im_end and im_end in model.generation_config.eos_token_id
    assert (
        tok.pad_token_id == model.generation_config.pad_token_id == tok.convert_tokens_to_ids("<|endoftext|>")
    )
    assert len(tok) <= cfg.text_config.vocab_size <= 2048

    images = _images()
    inputs = _inputs(processor, images)
    grid = inputs["image_grid_thw"]
    # smart resize to multiples of 28: 200x150 -> 196x140, 120x90 -> 112x84 (patch grid = size / 14)
    assert grid.tolist() == [[1, 10, 14], [1, 6, 8]]
    n_pad = int((inputs["input_ids"] == cfg.image_token_id).sum())
    assert n_pad == int(grid.prod(-1).sum()) // 4 == 35 + 12
    assert inputs["pixel_values"].shape == (int(grid.prod(-1).sum()), 3 * 2 * 14 * 14)
    assert "mm_token_type_ids" in inputs  # needed by the model for its 3D (M-RoPE) positions

    # Tokenising apply_chat_template with the images inline gives the same inputs.
    inline = processor.apply_chat_template(
        _chat(images), add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    assert torch.equal(inline["input_ids"], inputs["input_ids"])
    assert torch.equal(inline["image_grid_thw"], grid)

    t0 = time.monotonic()
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8)
    assert time.monotonic() - t0 < 10  # ~0.5 s on the project's machines
    new = out[0, inputs["input_ids"].shape[1] :].tolist()
    assert len(new) == 8 or (0 < len(new) < 8 and new[-1] in model.generation_config.eos_token_id)
    assert isinstance(processor.decode(new, skip_special_tokens=True), str)


def test_tokenizer_round_trips_protocol_text(tiny_dir):
    tok = load_processor(tiny_dir).tokenizer
    answer = (
        "<think> Both boxes look right: the chair is closer. </think>\nAction: Answer\n<answer>B</answer>"
    )
    for s in (TURN, answer, "Path Tracer start_point_2d end_point_2d [0, 0] [448, 336] 3.14\tÜnïcödé 🙂\n\n"):
        ids = tok.encode(s, add_special_tokens=False)
        assert tok.decode(ids) == s
        assert len(ids) < len(s)
    chatml = f"<|im_start|>assistant\n{answer}<|im_end|>\n"
    ids = tok.encode(chatml, add_special_tokens=False)
    assert (
        ids[0] == tok.convert_tokens_to_ids("<|im_start|>") and tok.convert_tokens_to_ids("<|im_end|>") in ids
    )
    assert tok.decode(ids) == chatml
    assert tok.decode(ids, skip_special_tokens=True) == f"assistant\n{answer}\n"


def test_chat_template_is_the_data_file(tiny_dir):
    template = CHAT_TEMPLATE_PATH.read_text(encoding="utf-8")
    processor = load_processor(tiny_dir)
    assert processor.chat_template == template
    trl_templates = Path(pytest.importorskip("trl").__file__).parent / "chat_templates"
    if (trl_templates / "qwen2_5_vl.jinja").exists():  # TRL recognises it and swaps in its training template
        assert (trl_templates / "qwen2_5_vl.jinja").read_text(encoding="utf-8") == template

    chat = _chat() + [{"role": "assistant", "content": [{"type": "text", "text": TURN}]}]
    env = jinja2.Environment(loader=jinja2.BaseLoader())
    for messages, gen_prompt in ((chat, False), (_chat(), True)):
        expected = env.from_string(template).render(messages=messages, add_generation_prompt=gen_prompt)
        got = processor.apply_chat_template(messages, add_generation_prompt=gen_prompt, tokenize=False)
        assert got == expected
    assert got.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    assert got.count("<|vision_start|><|image_pad|><|vision_end|>") == 2
    assert got.endswith("<|im_end|>\n<|im_start|>assistant\n")


def _make_stock_like(src: Path, dst: Path) -> None:
    """Rewrite a tiny checkpoint in the file layout of Qwen/Qwen2.5-VL-7B-Instruct (transformers 4.x)."""
    shutil.copytree(src, dst)
    template = (dst / "chat_template.jinja").read_text(encoding="utf-8")
    (dst / "chat_template.jinja").unlink()
    (dst / "processor_config.json").unlink()
    ip = json.loads((src / "processor_config.json").read_text())["image_processor"]
    (dst / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "min_pixels": 3136,
                "max_pixels": 12845056,
                "patch_size": 14,
                "temporal_patch_size": 2,
                "merge_size": 2,
                "image_mean": ip["image_mean"],
                "image_std": ip["image_std"],
                "image_processor_type": "Qwen2VLImageProcessor",
                "processor_class": "Qwen2_5_VLProcessor",
            },
            indent=2,
        )
    )
    (dst / "chat_template.json").write_text(json.dumps({"chat_template": template}, indent=2))
    tj = json.loads((dst / "tokenizer.json").read_text())
    (dst / "vocab.json").write_text(json.dumps(tj["model"]["vocab"], ensure_ascii=False))
    merges = [" ".join(m) if isinstance(m, list) else m for m in tj["model"]["merges"]]
    (dst / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    added = {
        str(t["id"]): {
            k: t[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")
        }
        for t in tj["added_tokens"]
    }
    (dst / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "add_bos_token": False,
                "add_prefix_space": False,
                "added_tokens_decoder": added,
                "additional_special_tokens": [
                    t["content"] for t in tj["added_tokens"] if t["content"].startswith("<|")
                ][1:14],
                "bos_token": None,
                "chat_template": template,
                "clean_up_tokenization_spaces": False,
                "eos_token": "<|im_end|>",
                "errors": "replace",
                "model_max_length": 131072,
                "pad_token": "<|endoftext|>",
                "processor_class": "Qwen2_5_VLProcessor",
                "split_special_tokens": False,
                "tokenizer_class": "Qwen2Tokenizer",
                "unk_token": None,
            },
            indent=2,
        )
    )
    # transformers 4.x config.json: text settings flat at the top, M-RoPE under rope_scaling.
    cfg = json.loads((dst / "config.json").read_text())
    text = cfg.pop("text_config")
    rope = text.pop("rope_parameters")
    for k in ("model_type", "layer_types", "dtype"):
        text.pop(k, None)
    cfg.update(text)
    cfg.pop("dtype", None)
    cfg.update(
        torch_dtype="float32",
        rope_theta=rope["rope_theta"],
        transformers_version="4.49.0",
        rope_scaling={"type": "mrope", "mrope_section": rope["mrope_section"]},
    )
    vision = cfg["vision_config"]
    vision.pop("rope_parameters", None)
    vision.update(in_chans=3, spatial_patch_size=vision["patch_size"])
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))


def test_load_processor_on_stock_layout(tiny_dir, tmp_path):
    from transformers import Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    stock = tmp_path / "stock"
    _make_stock_like(tiny_dir, stock)
    assert not (stock / "processor_config.json").exists()

    processor = load_processor(stock)
    assert isinstance(processor.image_processor, Qwen2VLImageProcessorPil)
    assert processor.image_processor.size.longest_edge == 12845056  # the checkpoint's own default
    assert processor.image_processor.size.shortest_edge == 3136
    assert processor.chat_template == CHAT_TEMPLATE_PATH.read_text(encoding="utf-8")

    tiny = load_processor(tiny_dir)
    images = _images()
    a, b = _inputs(processor, images), _inputs(tiny, images)
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["pixel_values"], b["pixel_values"])
    assert processor.tokenizer.decode(processor.tokenizer.encode(TURN)) == TURN

    # A stock (transformers 4.x) config.json loads into the same model.
    m_stock = Qwen2_5_VLForConditionalGeneration.from_pretrained(stock).eval()
    m_tiny = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_dir).eval()
    assert m_stock.config.text_config.rope_parameters["mrope_section"] == [2, 3, 3]
    with torch.no_grad():
        assert torch.allclose(m_stock(**a).logits, m_tiny(**b).logits)


def test_load_processor_pixel_overrides(tiny_dir):
    big = Image.new("RGB", (1280, 720))
    default = load_processor(tiny_dir)
    assert default.image_processor.size.longest_edge == 448 * 28 * 28
    rl = load_processor(tiny_dir, max_pixels=256 * 28 * 28, min_pixels=16 * 28 * 28)
    assert rl.image_processor.size.longest_edge == 200704 and rl.image_processor.size.shortest_edge == 12544
    for processor, max_tokens in ((default, 448), (rl, 256)):
        grid = processor.image_processor(images=[big], return_tensors="pt")["image_grid_thw"][0]
        assert int(grid.prod()) // 4 <= max_tokens
        assert abs(float(grid[2] / grid[1]) - 16 / 9) < 0.15  # aspect ratio kept (grid is t, h, w)
    small = Image.new("RGB", (40, 30))
    grid = rl.image_processor(images=[small], return_tensors="pt")["image_grid_thw"][0]
    assert int(grid[1] * grid[2]) * 14 * 14 >= 12544  # upscaled to min_pixels
