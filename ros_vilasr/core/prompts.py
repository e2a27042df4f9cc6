"""Prompt texts the model reads (spec §2, §5). The system prompt lives in a replaceable data file."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

PROMPTS_DIR = resources.files("ros_vilasr.core") / "data"
DEFAULT_SYSTEM_PROMPT = PROMPTS_DIR / "system_prompt.txt"  # the protocol's (ViLaSR's)

MULTIPLE_CHOICE = "multiple choice"
NUMERICAL = "numerical"
REGRESSION = "regression"

_SUFFIX = {
    MULTIPLE_CHOICE: "Answer with the option's letter from the given choices directly.",
    NUMERICAL: "Answer with a single word or number, e.g. 42 or 3.14.",
    REGRESSION: "Answer with a single word or number, e.g. 42 or 3.14.",
}
CONTINUE = ("Continue your reasoning. After each tool use, critically check whether the "
            "visualization is correct before you go on.")
ANSWER_NOW = ("You can no longer use Object Mapper or Path Tracer. Answer the original question "
              "now, in the required format.")
BEGIN = "Begin your reasoning, and critically evaluate each visualization you make."


def system_prompt(width: int, height: int, path: str | Path | None = None) -> str:
    """The system prompt with the first input image's resized size filled in."""
    template = Path(path).read_text() if path else DEFAULT_SYSTEM_PROMPT.read_text()
    return template.replace("{width}", str(width)).replace("{height}", str(height))


def index_sentence(index: int, size: tuple[int, int] | None = None) -> str:
    if size is None:
        return f"The index of the given image is {index}."
    return f"The index of the given image is {index} (width: {size[0]}, height: {size[1]})."


def problem_suffix(problem_type: str) -> str:
    return _SUFFIX.get(problem_type, "")


def question_block(question: str, options: list[str] | tuple[str, ...] = (),
                   problem_type: str = "") -> str:
    """Question, one option per line, then the answer-format suffix."""
    return "\n".join(p for p in [question.strip(), *options, problem_suffix(problem_type)] if p)


IMAGE_POSITIONS = ("first", "last")


def first_user_content(question: str, sizes: list[tuple[int, int]], options=(),
                       problem_type: str = "", kind: str = "single", image_position: str = "first") -> list[dict]:
    """Content parts of the first user turn. ``kind``: single | video | views.

    ``image_position`` is the model's (its run profile): ``first`` is the protocol's layout (images,
    then the question); ``last`` puts the question first and each image right before its index
    sentence, so the image sits at the same token distance from the answer whatever the question's
    length (the embedded model reads positions only at a fixed distance:
    benchmarks/results/image_layout_probe.md). Image parts are ``{"type": "image", "index": i}``
    with i 0-based into the dialogue's images.
    """
    if image_position not in IMAGE_POSITIONS:
        raise ValueError(f"image_position must be one of {IMAGE_POSITIONS}, not {image_position!r}")
    block = question_block(question, options, problem_type)
    last = image_position == "last"
    if len(sizes) == 1 and kind == "single":
        image, tail = {"type": "image", "index": 0}, {"type": "text", "text": f"{index_sentence(1)}\n{BEGIN}"}
        if last:
            return [{"type": "text", "text": block + "\n"}, image, tail]
        return [image, {"type": "text", "text": f"{block}\n{tail['text']}"}]
    n = len(sizes)
    intro = (f"These are {n} frames of a video, numbered 1 to {n} in temporal order."
             if kind == "video" else f"These are {n} views of the same scene, numbered 1 to {n}.")
    parts: list[dict] = [{"type": "text", "text": f"{intro}\n{block}\n" if last else intro + "\n"}]
    for i, size in enumerate(sizes):
        parts += [{"type": "image", "index": i}, {"type": "text", "text": index_sentence(i + 1, size) + "\n"}]
    parts.append({"type": "text", "text": BEGIN if last else f"{block}\n{BEGIN}"})
    return parts


def feedback_content(new_images: list[tuple[int, tuple[int, int]]], final: bool) -> list[dict]:
    """The user turn after a drawing step: each new image with its index sentence; the last one
    followed by the continue or the answer-now sentence. ``new_images``: (0-based index, size)."""
    parts: list[dict] = []
    for n, (index, size) in enumerate(new_images):
        text = index_sentence(index + 1, size)
        if n == len(new_images) - 1:
            text += " " + (ANSWER_NOW if final else CONTINUE)
        parts += [{"type": "image", "index": index}, {"type": "text", "text": text}]
    return parts
