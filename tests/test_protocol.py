"""Parser table tests and property-based fuzzing: no text makes the parser raise."""

import json
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ros_vilasr.core.protocol import (
    ANSWER,
    OBJECT_MAPPER,
    PATH_TRACER,
    Box,
    Line,
    concluded_option,
    extract_answer,
    format_ok,
    is_reflective,
    parse_turn,
)

BOX_TURN = ('<think>Find the chair.</think>\nAction: Object Mapper\n```json\n'
            '[{"index": 1, "bbox_2d": [10, 20, 110, 220], "label": "chair"}]\n```')
LINE_TURN = ("<think>Trace.</think>\nAction: Path Tracer\n```json\n"
             "[{'index': 2, 'start_point_2d': [5, 6], 'end_point_2d': [70.5, 80], 'label': 'route'}]\n```")
ANSWER_TURN = "<think>So it is left.</think>\nAction: Answer\n<answer> B </answer>"


@pytest.mark.parametrize("text, action, ops, answer", [
    (BOX_TURN, OBJECT_MAPPER, [Box(1, "chair", (10, 20, 110, 220))], None),
    (LINE_TURN, PATH_TRACER, [Line(2, "route", (5, 6), (70.5, 80))], None),
    (ANSWER_TURN, ANSWER, [], "B"),
    # JSON keywords inside a Python-literal-looking block
    ('<think>t</think>\nAction: Object Mapper\n```json\n[{"index": 1, "bbox_2d": [1, 2, 3, 4], '
     '"label": "a", "visible": true, "note": null}]\n```', OBJECT_MAPPER, [Box(1, "a", (1, 2, 3, 4))], None),
    # Python literal with tuple, True and a trailing comma
    ("<think>t</think>\nAction: Object Mapper\n```json\n[{'index': 1, 'bbox_2d': (1, 2, 3, 4), "
     "'label': 'a', 'ok': True},]\n```", OBJECT_MAPPER, [Box(1, "a", (1, 2, 3, 4))], None),
    # missing closing fence
    ('<think>t</think>\nAction: Object Mapper\n```json\n[{"index": 1, "bbox_2d": [1, 2, 3, 4], '
     '"label": "a"}]', OBJECT_MAPPER, [Box(1, "a", (1, 2, 3, 4))], None),
    # several blocks, one broken: the broken one is dropped
    ('<think>t</think>\nAction: Object Mapper\n```json\n[{"index": 1, "bbox_2d": [1, 2, 3, 4], "label": "a"}]\n'
     '```\n```json\n[{"index": 1, oops\n```\n'
     '```json\n{"index": 1, "bbox_2d": [5, 6, 7, 8], "label": "b"}\n```',
     OBJECT_MAPPER, [Box(1, "a", (1, 2, 3, 4)), Box(1, "b", (5, 6, 7, 8))], None),
    # invalid items are ignored: strings for numbers, NaN, bool index, wrong arity, no label
    ('<think>t</think>\nAction: Object Mapper\n```json\n[{"index": 1, "bbox_2d": ["1", 2, 3, 4], "label": "s"},'
     '{"index": 1, "bbox_2d": [NaN, 2, 3, 4], "label": "n"}, {"index": true, "bbox_2d": [1, 2, 3, 4], "label": "t"},'
     '{"index": 1, "bbox_2d": [1, 2, 3], "label": "w"}, {"index": 1, "bbox_2d": [1, 2, 3, 4]},'
     '{"index": 1, "bbox_2d": [1e308, 2, 3, 4], "label": "h"},'
     '{"index": 1.0, "bbox_2d": [-5, 2, 3, 4], "label": "ok"}]\n```',
     OBJECT_MAPPER, [Box(1, "ok", (-5, 2, 3, 4))], None),
    # no eval: a call inside the block is not a literal
    ("<think>t</think>\nAction: Object Mapper\n```json\n__import__('os').system('true')\n```",
     OBJECT_MAPPER, [], None),
    ('<think>t</think>\nAction: Object Mapper\n```json\n[{"index": 1, "bbox_2d": [1, 2, 3, 4], "label": "椅子"}]\n```',
     OBJECT_MAPPER, [Box(1, "椅子", (1, 2, 3, 4))], None),
    ("no structure at all", None, [], None),
    ("", None, [], None),
])
def test_parse_table(text, action, ops, answer):
    turn = parse_turn(text)
    assert turn.action == action
    assert turn.ops == ops
    assert turn.answer == answer


def test_dropped_items_are_reported():
    turn = parse_turn('<think>t</think>\nAction: Object Mapper\n```json\n'
                      '[{"index": "1", "bbox_2d": [1,2,3,4], "label": "a"}]\n```')
    assert turn.ops == [] and "index is not an integer" in turn.problems[0]


def test_hostile_inputs_yield_errors_not_exceptions():
    deep = "[" * 100_000 + "]" * 100_000
    for body in (deep, "9" * 5000, "1" * 2_000_000, '{"a": ' * 5000, "[" + "1e999," * 1000 + "]"):
        turn = parse_turn(f"<think>t</think>\nAction: Object Mapper\n```json\n{body}\n```")
        assert turn.ops == [] and turn.problems
    huge = "<think>" + "x" * 3_000_000 + "</think>"
    assert parse_turn(huge).thought.startswith("xxx")


@pytest.mark.parametrize("text, expected", [
    ("<answer> C </answer>", "C"), ("a <answer>1</answer> <answer>2</answer>", "1"),
    ("  no tags  ", "no tags"), ("", ""), (None, ""),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_format_reward_rules():
    assert format_ok([BOX_TURN, LINE_TURN, ANSWER_TURN])
    assert format_ok([ANSWER_TURN])
    assert not format_ok([])
    assert not format_ok([BOX_TURN])  # never answers
    assert not format_ok([ANSWER_TURN, ANSWER_TURN])  # answer before the last turn
    assert not format_ok(["Action: Answer\n<answer>B</answer>"])  # no think
    # a think cut off by a second one (a sampled turn that stage 2 once kept and trained on)
    assert not format_ok(["<think>S is at row 4,Action: Path Tracer\n" + BOX_TURN, ANSWER_TURN])
    bad_item = BOX_TURN.replace('"label": "chair"', '"name": "chair"')
    assert not format_ok([bad_item, ANSWER_TURN])
    broken = BOX_TURN + '\n```json\n[{"index": 1,\n```'
    assert not format_ok([broken, ANSWER_TURN])


def test_reflection_detection():
    a = Box(1, "chair", (1, 2, 3, 4))
    assert is_reflective([[a], [Box(1, "chair", (1, 2, 3, 5))]])  # same label, different box
    assert not is_reflective([[a], [Box(1, "chair", (1, 2, 3, 4))]])  # same box
    assert is_reflective([[a], [Box(2, "chair", (1, 2, 3, 4))]])  # other target image
    assert not is_reflective([[a], [Box(1, "table", (5, 6, 7, 8))]])  # other label
    assert not is_reflective([[a, Box(1, "chair", (9, 9, 9, 9))]])  # within one step only


PIECES = [BOX_TURN, LINE_TURN, ANSWER_TURN, "<think>", "</think>", "```json\n", "\n```", "Action: ",
          "[", "]", "{", "}", '"bbox_2d"', "'start_point_2d'", "NaN", "Infinity", "-1e309", "'label'",
          ":", ",", "<answer>", "</answer>", "\x00", "\ud7ff", "🪑", "True", "null", "(", ")", "9" * 400]


@st.composite
def turns(draw):
    if draw(st.booleans()):
        return "".join(draw(st.lists(st.sampled_from(PIECES) | st.text(max_size=20), max_size=30)))
    base = draw(st.sampled_from([BOX_TURN, LINE_TURN, ANSWER_TURN]))
    pos = draw(st.integers(0, len(base)))
    cut = draw(st.integers(0, 20))
    insert = draw(st.text(alphabet=string.printable + "é漢🙂", max_size=40) | st.sampled_from(PIECES))
    return base[:pos] + insert + base[pos + cut:]


@settings(max_examples=3000, deadline=None)
@given(turns())
def test_fuzz_parser_never_raises(text):
    turn = parse_turn(text)
    for op in turn.ops:
        assert isinstance(op.index, int) and isinstance(op.label, str)
        assert all(isinstance(c, float) for c in op.coords)
    format_ok([text])
    extract_answer(text)


@settings(max_examples=1000, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=4),
                    max_leaves=20))
def test_fuzz_arbitrary_json_blocks(value):
    body = json.dumps(value) if not isinstance(value, float) or value == value else "NaN"
    parse_turn(f"<think>x</think>\nAction: Object Mapper\n```json\n{body}\n```")


def test_an_integer_too_large_for_a_float_is_an_invalid_coordinate():
    huge = "1" + "0" * 400  # valid JSON; float() of it overflows
    turn = parse_turn('<think>x</think>\nAction: Object Mapper\n```json\n'
                      f'[{{"index": 1, "bbox_2d": [{huge}, 2, 3, 4], "label": "cup"}}]\n```')
    assert turn.ops == [] and "bbox_2d is not 4 finite numbers" in " ".join(turn.problems)


@pytest.mark.parametrize("thought, expected", [
    ("The fridge is to the left of the table: option A.", "A"), ("Option B.", "B"),
    ("the option listing exactly these moves is C", "C"), ("Option A? No: option D.", "D"),
    ("There are 7.", None), ("", None), (None, None), ("an option a", None),
])
def test_the_option_a_thought_concludes_with(thought, expected):
    assert concluded_option(thought) == expected
