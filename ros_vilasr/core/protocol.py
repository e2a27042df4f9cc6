"""The draw-to-reason protocol: parse one assistant turn, check format, extract answers (spec §1, §3, §6).

Everything here is total: any text, however hostile, yields a ``ParsedTurn`` (whatever could not
be used is listed in ``problems``) — no exception escapes. Fenced blocks are read with a restricted
literal reader (JSON first, then a Python-literal AST walk); nothing is ever evaluated.
"""

from __future__ import annotations

import ast
import json
import math
import re
import warnings
from dataclasses import dataclass, field

OBJECT_MAPPER = "Object Mapper"
PATH_TRACER = "Path Tracer"
ANSWER = "Answer"
TOOLS = (OBJECT_MAPPER, PATH_TRACER)

MAX_BLOCK_CHARS = 100_000  # a longer block is hostile or degenerate, not a drawing
MAX_COORD = 100_000.0  # pixels; beyond this a coordinate is garbage, not a position

_THINK = re.compile(r"<think>(.*?)</think>", re.S)
_ACTION = re.compile(r"Action:[ \t]*(Object Mapper|Path Tracer|Answer)")
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)
_FENCE_OPEN = re.compile(r"^[ \t]*```json[ \t]*\r?$", re.M)
_FENCE_CLOSE = re.compile(r"^[ \t]*```[ \t]*\r?$", re.M)
_WELL_FORMED_HEAD = re.compile(r"\s*<think>(?:(?!<think>).)*?</think>\s*Action:", re.S)  # one think block
_CONCLUDED_OPTION = re.compile(r"\b(?:[Oo]ption|is) ([A-Z])\b")  # "..., option C." / "the answer is C"


@dataclass(frozen=True)
class Box:
    index: int
    label: str
    bbox: tuple[float, float, float, float]

    kind = "box"

    @property
    def coords(self) -> tuple[float, ...]:
        return self.bbox


@dataclass(frozen=True)
class Line:
    index: int
    label: str
    start: tuple[float, float]
    end: tuple[float, float]

    kind = "line"

    @property
    def coords(self) -> tuple[float, ...]:
        return (*self.start, *self.end)


Op = Box | Line


@dataclass
class ParsedTurn:
    text: str
    thought: str | None = None
    action: str | None = None  # OBJECT_MAPPER | PATH_TRACER | ANSWER | None
    ops: list[Op] = field(default_factory=list)
    answer: str | None = None  # text inside <answer>…</answer>, trimmed
    problems: list[str] = field(default_factory=list)  # dropped blocks / items, with reasons


class _NotLiteral(ValueError):
    pass


_NAMES = {"True": True, "False": False, "None": None, "true": True, "false": False, "null": None}


def _literal(node: ast.AST):
    """Python-literal (and JSON-keyword) reader over an AST: containers, numbers, strings only."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise _NotLiteral("dict unpacking")
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return _NAMES[node.id]
    raise _NotLiteral(type(node).__name__)


def read_literal(text: str):
    """Parse a fenced block's body as JSON or a Python literal. Raises ValueError on anything else."""
    if len(text) > MAX_BLOCK_CHARS:
        raise ValueError(f"block longer than {MAX_BLOCK_CHARS} characters")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        pass
    try:
        with warnings.catch_warnings():  # model text is not our source code: no escape warnings
            warnings.simplefilter("ignore")
            tree = ast.parse(text.strip(), mode="eval")
        return _literal(tree.body)
    except (SyntaxError, ValueError, RecursionError, MemoryError, TypeError) as exc:
        raise ValueError(f"not a literal: {type(exc).__name__}") from None


def fenced_blocks(text: str) -> list[str]:
    """Bodies of ```json fenced blocks; an unclosed block ends at the next </think> or the end."""
    blocks, pos = [], 0
    while m := _FENCE_OPEN.search(text, pos):
        start = m.end()
        close = _FENCE_CLOSE.search(text, start)
        think = text.find("</think>", start)
        if close:
            end, pos = close.start(), close.end()
        else:
            end = think if think >= 0 else len(text)
            pos = len(text)
        blocks.append(text[start:end])
    return blocks


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    if isinstance(v, int) and abs(v) > MAX_COORD:  # JSON integers are unbounded: float() may overflow
        return None
    f = float(v)
    return f if math.isfinite(f) and abs(f) <= MAX_COORD else None


def _point(v, n: int) -> tuple[float, ...] | None:
    if not isinstance(v, (list, tuple)) or len(v) != n:
        return None
    nums = tuple(_number(x) for x in v)
    return None if any(x is None for x in nums) else nums


def _index(v) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return None


def parse_op(item) -> Op | str:
    """One list item → Box, Line, or a string saying why it is not a valid operation."""
    if not isinstance(item, dict):
        return f"item is {type(item).__name__}, not an object"
    label = item.get("label")
    if not isinstance(label, str):
        return "missing or non-string label"
    index = _index(item.get("index"))
    if index is None:
        return f"label {label!r}: index is not an integer"
    if "bbox_2d" in item:
        bbox = _point(item["bbox_2d"], 4)
        return Box(index, label, bbox) if bbox else f"label {label!r}: bbox_2d is not 4 finite numbers"
    if "start_point_2d" in item and "end_point_2d" in item:
        start, end = _point(item["start_point_2d"], 2), _point(item["end_point_2d"], 2)
        if start and end:
            return Line(index, label, start, end)
        return f"label {label!r}: points are not 2 finite numbers each"
    return f"label {label!r}: neither bbox_2d nor start/end points"


def parse_turn(text: str) -> ParsedTurn:
    """Parse one assistant turn. Never raises."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    turn = ParsedTurn(text)
    if m := _THINK.search(text):
        turn.thought = m.group(1).strip()
    if m := _ACTION.search(text):
        turn.action = m.group(1)
    if m := _ANSWER.search(text):
        turn.answer = m.group(1).strip()
    for block in fenced_blocks(text):
        try:
            items = read_literal(block)
        except ValueError as exc:
            turn.problems.append(f"block dropped: {exc}")
            continue
        if isinstance(items, dict):
            items = [items]
        if not isinstance(items, list):
            turn.problems.append(f"block dropped: {type(items).__name__}, not a list")
            continue
        for item in items:
            op = parse_op(item)
            if isinstance(op, str):
                turn.problems.append(op)
            else:
                turn.ops.append(op)
    return turn


def extract_answer(text) -> str:
    """Text between the first <answer>…</answer>, trimmed; the whole text if there is none.
    ``None`` gives ""; bytes and other values are converted. Never raises."""
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    elif not isinstance(text, str):
        text = str(text)
    m = _ANSWER.search(text)
    return (m.group(1) if m else text).strip()


def concluded_option(thought: str | None) -> str | None:
    """The option letter a thought concludes with (its last "option X" or "is X"), or None."""
    named = _CONCLUDED_OPTION.findall(thought or "")
    return named[-1] if named else None


def answer_follows_thought(turn: str, answer: str | None, problem_type: str) -> bool:
    """False only for a multiple-choice answer whose turn's thought concludes with another option;
    a thought that names no option does not contradict its answer."""
    if problem_type != "multiple choice":
        return True
    named = concluded_option(parse_turn(turn).thought)
    return named is None or named == (answer or "").strip()


def turn_well_formed(text: str, last: bool) -> bool:
    """Spec §6 format rule for one assistant turn (``last``: the final turn of the dialogue)."""
    if not _WELL_FORMED_HEAD.match(text or ""):
        return False
    turn = parse_turn(text)
    if last:
        return turn.action == ANSWER and turn.answer is not None
    if turn.answer is not None or turn.action not in TOOLS or turn.problems:
        return False
    return bool(fenced_blocks(text)) and bool(turn.ops)


def format_ok(assistant_turns: list[str]) -> bool:
    """RL format reward (0/1 as bool): every turn well formed, only the last one answers."""
    n = len(assistant_turns)
    return n > 0 and all(turn_well_formed(t, i == n - 1) for i, t in enumerate(assistant_turns))


def revises(op: Op, earlier: list[Op]) -> bool:
    """True when ``op`` redraws a label drawn in an earlier step with other parameters (§6)."""
    return any(
        e.label == op.label and (e.kind != op.kind or e.coords != op.coords or e.index != op.index)
        for e in earlier
    )


def is_reflective(steps_ops: list[list[Op]]) -> bool:
    """Stage-2 filter: some label appears in two different steps with different parameters."""
    seen: list[Op] = []
    for ops in steps_ops:
        if any(revises(op, seen) for op in ops):
            return True
        seen.extend(ops)
    return False
