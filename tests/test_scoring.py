"""Scoring and RL reward tests (protocol spec section 6)."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ros_vilasr.core.scoring import (
    PROBLEM_TYPES,
    extract_answer,
    mean_relative_accuracy,
    parse_number,
    rl_accuracy,
    rl_reward,
    score_answer,
    score_free_form,
    score_multiple_choice,
    score_numerical,
    score_regression,
    score_view_change,
)

# --------------------------------------------------------------------------- #
# extract_answer / parse_number
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>x</think> Action: Answer\n<answer> B </answer>", "B"),
        ("<answer>1</answer> <answer>2</answer>", "1"),  # first match
        ("<answer>\n 3.5 m \n</answer>", "3.5 m"),
        ("  no tags here  ", "no tags here"),
        ("<answer>unclosed", "<answer>unclosed"),
        ("", ""),
        (None, ""),
        (7, "7"),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("7", 7.0),
        (" -3.5 ", -3.5),
        ("1,000", 1000.0),
        ("1,000.25", 1000.25),
        (".5", 0.5),
        ("7.", 7.0),
        ("1e3", 1000.0),
        ("about 7 m", None),
        ("7 m", None),
        ("nan", None),
        ("inf", None),
        ("1_000", None),
        ("", None),
        (None, None),
        ("--3", None),
    ],
)
def test_parse_number(text, expected):
    assert parse_number(text) == expected


# --------------------------------------------------------------------------- #
# per-question-type scorers
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "pred, gt, expected",
    [
        ("B", "B", 1.0),
        ("b", "B", 1.0),
        ("B. left", "b", 1.0),
        ("B. left", "B. right", 1.0),  # only the first character counts
        ("  B", "B", 1.0),  # trimmed
        ("<answer>C</answer>", "C", 1.0),
        ("C", "B", 0.0),
        ("(B)", "B", 0.0),  # first characters differ
        ("", "B", 0.0),
        ("   ", "B", 0.0),
        (None, "B", 0.0),
        ("B", "", 0.0),
        ("B", None, 0.0),
        (12, "1", 1.0),  # non-string prediction converted, never crashes
    ],
)
def test_multiple_choice(pred, gt, expected):
    assert score_multiple_choice(pred, gt) == expected


@pytest.mark.parametrize(
    "pred, gt, expected",
    [
        ("3", "3", 1.0),
        ("3", "4", 0.0),
        ("3.0", "3", 0.0),  # exactly one has a decimal point
        ("3", "3.0", 0.0),
        ("3.0", "3.00", 1.0),
        ("3.14159", "3.14", 1.0),  # rounded to 2 decimals
        ("3.146", "3.14", 0.0),
        ("1,000", "1000", 0.0),  # comma on one side only (checked on the raw strings)
        ("1000", "1,000", 0.0),
        ("1,000", "1,000", 1.0),
        ("1,000", "1000.0", 1.0),  # both have '.' or ','; numbers equal
        ("-2", "-2", 1.0),
        ("about 3", "3", 0.0),  # whole answer must be a number
        ("3 apples", "3", 0.0),
        ("", "3", 0.0),
        (None, "3", 0.0),
        ("3", None, 0.0),
        ("x.y", "1.5", 0.0),
    ],
)
def test_numerical(pred, gt, expected):
    assert score_numerical(pred, gt) == expected


@pytest.mark.parametrize(
    "pred, gt, expected",
    [
        # hand computed: rel = |p-g|/|g|; passes theta iff rel <= 1 - theta
        (10, 10, 1.0),
        (9.6, 10, 1.0),  # rel 0.04 <= 0.05
        (11, 10, 0.9),  # rel 0.1: theta 0.50..0.90 pass
        (13, 10, 0.5),  # rel 0.3: theta 0.50..0.70
        (13.3, 10, 0.4),  # rel 0.33: theta 0.50..0.65
        (7.5, 10, 0.6),  # rel 0.25: theta 0.50..0.75
        (15, 10, 0.1),  # rel 0.5: theta 0.50 only
        (5, 10, 0.1),
        (4, 10, 0.0),  # rel 0.6
        (100, 10, 0.0),
        (-10, -10, 1.0),
        (10, -10, 0.0),
        # float32 boundary: float32(0.2) > 1 - float32(0.8), so theta 0.8 fails
        (12, 10, 0.6),
        # gt == 0 never crashes: epsilon 1e-8 as the original
        (0, 0, 1.0),
        (1, 0, 0.0),
        (-0.001, 0, 0.0),
        (float("nan"), 1, 0.0),
        (1, float("inf"), 0.0),
        (1e39, 1, 0.0),  # overflows float32
        ("3", "3", 1.0),
        ("abc", 3, 0.0),
        (None, 3, 0.0),
    ],
)
def test_mean_relative_accuracy(pred, gt, expected):
    assert mean_relative_accuracy(pred, gt) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    "pred, gt, expected",
    [
        ("7", "7", 1.0),
        ("7.0", "7", 1.0),  # no decimal rule for regression
        ("1,000", "1000", 1.0),  # commas removed
        ("1100", "1,000", 0.9),
        ("<answer> 13 </answer>", "10", 0.5),
        ("about 7 m", "7", 0.0),  # whole extracted answer must be a number
        ("7 m", "7", 0.0),
        ("7m", "7", 0.0),
        ("", "7", 0.0),
        (None, "7", 0.0),
        ("7", "", 0.0),
        ("0", "0", 1.0),
        ("nan", "7", 0.0),
    ],
)
def test_regression(pred, gt, expected):
    assert score_regression(pred, gt) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    "pred, gt, expected",
    [
        (" Left ", "left", 1.0),
        ("LEFT", "left", 1.0),
        ("left side", "left", 0.0),
        ("", "", 0.0),
        (None, "left", 0.0),
    ],
)
def test_free_form(pred, gt, expected):
    assert score_free_form(pred, gt) == expected


VCI_GT = "move_right:1,rotate_left:30"


@pytest.mark.parametrize(
    "pred, gt, expected",
    [
        (VCI_GT, VCI_GT, 1.0),
        ("rotate_left:30,move_right:1", VCI_GT, 1.0),  # order irrelevant
        # keys normalised: case, spaces, hyphens; whitespace around values
        ("Move Right: 1 , rotate-left:30", VCI_GT, 1.0),
        # net values: right - left = 0 - (-1) = 1; right - left = -30 - 0 = -30
        ("move_left:-1,rotate_right:-30", VCI_GT, 1.0),
        ("move_right:2,move_left:1,rotate_left:30", VCI_GT, 1.0),
        # rotate pair: pred net 0 vs gt -30 -> 0; other four pairs 1 -> 4/5
        ("move_right:1", VCI_GT, 0.8),
        # move pair rel 0.2 -> MRA 0.6 (float32 boundary); (0.6 + 4) / 5
        ("move_right:1.2,rotate_left:30", VCI_GT, 0.92),
        # pairs absent from both sides: net 0 == 0 -> 1.0 each
        ("move_up:0", "move_up:0", 1.0),
        ("move_right:1,rotate_left:30,", VCI_GT, 1.0),  # trailing comma tolerated
        ("move_right:1,foo:3,rotate_left:30", VCI_GT, 1.0),  # unknown keys ignored
        # malformed predictions -> 0
        ("", VCI_GT, 0.0),
        (None, VCI_GT, 0.0),
        ("garbage", VCI_GT, 0.0),
        ("foo:1", VCI_GT, 0.0),  # no known action key
        ("move_right:abc", VCI_GT, 0.0),
        ("move_right:1:2", VCI_GT, 0.0),
        ("move_right 1", VCI_GT, 0.0),
        ("move_right:nan", VCI_GT, 0.0),
        ("move_right:1 m,rotate_left:30", VCI_GT, 0.0),
        (VCI_GT, "", 0.0),  # malformed gt also 0, no crash
    ],
)
def test_view_change(pred, gt, expected):
    assert score_view_change(pred, gt) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    "pred, gt, problem_type, expected",
    [
        ("B. left", "B", "multiple choice", 1.0),
        ("B", "B", " Multiple Choice ", 1.0),
        ("3.0", "3", "numerical", 0.0),
        ("3", "3", "numerical", 1.0),
        ("about 7 m", "7", "regression", 0.0),
        ("11", "10", "regression", 0.9),
        ("left", "Left", "free-form", 1.0),
        (VCI_GT, VCI_GT, "vci", 1.0),
        ("<think>t</think> Action: Answer\n<answer>C</answer>", "C", "multiple choice", 1.0),
        (None, "C", "multiple choice", 0.0),
    ],
)
def test_score_answer_dispatch(pred, gt, problem_type, expected):
    assert score_answer(pred, gt, problem_type) == pytest.approx(expected)


@pytest.mark.parametrize("problem_type", ["ocr", "", None, "multiple_choice", 3])
def test_score_answer_unknown_type(problem_type):
    with pytest.raises(ValueError):
        score_answer("A", "A", problem_type)


# --------------------------------------------------------------------------- #
# RL accuracy and reward
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "answer, gt, problem_type, expected",
    [
        ("B", "B", "multiple choice", 1.0),
        (" B ", "B", "multiple choice", 1.0),  # trimmed
        ("B. left", "B", "multiple choice", 0.0),  # exact match, stricter than eval
        ("b", "B", "multiple choice", 0.0),
        ("", "B", "multiple choice", 0.0),
        ("about 11 m", "10", "regression", 0.9),  # first number, lenient
        ("<answer>13 chairs</answer>", "10", "numerical", 0.5),
        ("3.0", "3", "numerical", 1.0),  # no decimal rule in RL
        ("no number", "10", "regression", 0.0),
        ("1,000", "1000", "regression", 0.0),  # first number is 1 (original regex)
        (VCI_GT, VCI_GT, "vci", 1.0),
        ("x", "x", "free-form", 1.0),
        ("A", "A", "unknown-type", 0.0),  # never raises
        (None, "A", "multiple choice", 0.0),
    ],
)
def test_rl_accuracy(answer, gt, problem_type, expected):
    assert rl_accuracy(answer, gt, problem_type) == pytest.approx(expected)


@pytest.mark.parametrize(
    "acc, fmt, expected",
    [
        (1.0, True, 1.0),
        (1.0, False, 0.5),
        (0.6, True, 0.8),
        (0.6, 0, 0.3),
        (0.0, True, 0.0),  # no accuracy -> no format credit
        (0.0, False, 0.0),
        (-1.0, True, 0.0),
        (float("nan"), True, 0.0),
        (None, True, 0.0),
        (0.4, None, 0.2),
        (1.0, 1, 1.0),
    ],
)
def test_rl_reward(acc, fmt, expected):
    assert rl_reward(acc, fmt) == pytest.approx(expected)


# --------------------------------------------------------------------------- #
# properties: no scorer ever raises on arbitrary input
# --------------------------------------------------------------------------- #

_answers = st.one_of(
    st.none(),
    st.text(),
    st.text(alphabet="0123456789.,-+e :_abcdmovetrighlfwsu<>/", max_size=40),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
)


@settings(max_examples=300, deadline=None)
@given(pred=_answers, gt=_answers)
def test_scorers_never_raise(pred, gt):
    for fn in (
        score_multiple_choice,
        score_numerical,
        score_regression,
        score_free_form,
        score_view_change,
        mean_relative_accuracy,
    ):
        v = fn(pred, gt)
        assert isinstance(v, float) and 0.0 <= v <= 1.0 and not math.isnan(v)
    for pt in PROBLEM_TYPES:
        v = score_answer(pred, gt, pt)
        assert 0.0 <= v <= 1.0
        r = rl_accuracy(pred, gt, pt)
        assert 0.0 <= r <= 1.0
        assert 0.0 <= rl_reward(r, True) <= 1.0
    assert isinstance(extract_answer(pred), str)
