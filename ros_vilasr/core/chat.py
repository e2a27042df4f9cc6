"""ChatML serialisation, byte-identical to the Qwen2.5-VL chat template (tested against it).

Messages are ``{"role", "content"}`` with content a string or a list of parts
``{"type": "text", "text": ...}`` / ``{"type": "image", "index": i}``. Rendering one message at a
time is what makes incremental tokenisation possible: a dialogue's text is the concatenation of
its messages' texts.
"""

from __future__ import annotations

IMAGE_TOKENS = "<|vision_start|><|image_pad|><|vision_end|>"
# Never to be sampled: a generated placeholder is an image without pixels in the next turn's input.
VISION_PLACEHOLDERS = ("<|image_pad|>", "<|video_pad|>")
GENERATION_PROMPT = "<|im_start|>assistant\n"
END = "<|im_end|>"


def placeholder_ids(tokenizer) -> tuple[int, ...]:
    return tuple(tokenizer.convert_tokens_to_ids(list(VISION_PLACEHOLDERS)))


def content_text(content, image_token: str = IMAGE_TOKENS) -> str:
    if isinstance(content, str):
        return content
    return "".join(image_token if p["type"] == "image" else p["text"] for p in content)


def render_message(message: dict) -> str:
    return f"<|im_start|>{message['role']}\n{content_text(message['content'])}{END}\n"


def render(messages: list[dict], add_generation_prompt: bool = False) -> str:
    text = "".join(render_message(m) for m in messages)
    return text + GENERATION_PROMPT if add_generation_prompt else text


def image_indices(messages: list[dict]) -> list[int]:
    """The dialogue image indices referenced by ``messages``, in order of appearance."""
    return [p["index"] for m in messages if not isinstance(m["content"], str)
            for p in m["content"] if p["type"] == "image"]


def to_hf(messages: list[dict]) -> list[dict]:
    """The same dialogue in Hugging Face chat-template form (images as ``{"type": "image"}``)."""
    out = []
    for m in messages:
        if isinstance(m["content"], str):
            out.append({"role": m["role"], "content": [{"type": "text", "text": m["content"]}]})
        else:
            out.append({"role": m["role"], "content": [
                {"type": "image"} if p["type"] == "image" else {"type": "text", "text": p["text"]}
                for p in m["content"]]})
    return out


def to_sharegpt(messages: list[dict]) -> list[dict]:
    """``conversations`` as in ViLaSR data and evaluation output: ``<image>`` placeholders."""
    return [{"role": m["role"], "content": content_text(m["content"], "<image>")} for m in messages]
