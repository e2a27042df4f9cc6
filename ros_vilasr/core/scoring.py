"""Answer scoring (evaluation) and RL accuracy/reward; per-benchmark aggregates are in
``aggregates``.

Implements section 6 of the protocol spec (``/work/shared/spec/protocol.md``).
Pure Python + numpy: no torch, no rclpy.

Every scorer takes the *extracted* answer (see :func:`extract_answer`; passing the
raw model turn also works, the scorers extract again) and the ground truth, and
returns a float in [0, 1].  Empty, ``None``, non-string or malformed predictions
score 0; the scorers never raise (only :func:`score_answer` raises, and only for
an unknown ``problem_type``).

Precise rules (where the spec leaves room):

* Strings are compared after :func:`extract_answer` (text inside the first
  ``<answer>...</answer>``, else the whole text) and ``str.strip()``.
* multiple choice: first character of the stripped prediction == first
  character of the stripped ground truth, case-insensitive.  ``"(B)"`` vs ``"B"``
  is wrong (first characters differ), ``"B. left"`` vs ``"b"`` is right.
* numerical: the "has a decimal point or comma" test is done on the stripped
  *raw* strings (before any comma removal).  If exactly one side has one, the
  item is wrong.  Otherwise both sides must *entirely* parse as a number after
  all commas are removed (see :func:`parse_number`), and they are compared after
  ``round(x, 2)``.  So ``"1,000"`` vs ``"1000"`` -> 0 (only one has a comma),
  ``"1,000"`` vs ``"1,000"`` -> 1, ``"3.0"`` vs ``"3"`` -> 0, ``"3.0"`` vs ``"3.00"`` -> 1.
* regression: both sides must entirely parse as a number after removing commas
  (``"about 7 m"`` -> 0); score = :func:`mean_relative_accuracy`.
* MRA: thresholds theta = 0.50, 0.55, ..., 0.95 (float32, as torch.arange does);
  relative error = |pred - gt| / (|gt| + 1e-8), all in float32 like the original;
  an item counts at theta iff relative error <= 1 - theta (the spec's ``<=``; the
  original RL code uses ``<``, which only differs exactly on a boundary).  The
  result is (number of thresholds passed) / 10 as a Python float.  gt == 0 does
  not crash: the 1e-8 epsilon makes it 1.0 for pred == 0 and 0.0 for any
  |pred| > 5e-9 (exactly what the original computes).  Non-finite inputs score 0.
  Float32 matters on boundaries: MRA(12, 10) = 0.6, not 0.7, because
  float32(2/10) > 1 - float32(0.8) (float64 VSI-Bench code gives 0.6 too).
* free-form: exact match after ``strip()`` + ``casefold()``.
* vci (SPAR view-change, ``"k:v,k:v"``): see :func:`score_view_change`.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from .protocol import extract_answer

__all__ = [
    "PROBLEM_TYPES",
    "VCI_ACTION_PAIRS",
    "extract_answer",
    "parse_number",
    "score_multiple_choice",
    "score_numerical",
    "mean_relative_accuracy",
    "score_regression",
    "score_free_form",
    "score_view_change",
    "score_answer",
    "rl_accuracy",
    "rl_reward",
]

PROBLEM_TYPES = ("multiple choice", "numerical", "regression", "free-form", "vci")

# --------------------------------------------------------------------------- #
# Answer extraction and number parsing
# --------------------------------------------------------------------------- #

# A plain decimal number: optional sign, digits with optional fraction (or a
# leading-dot fraction), optional exponent.  No nan/inf, no underscores, no units.
_NUMBER_FULL_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
# The original RL reward's "first number" pattern (verl/utils/reward_score/gcot.py).
_FIRST_NUMBER_RE = re.compile(r"[-+]?\d*\.?\d+")


def parse_number(text: Any) -> float | None:
    """Parse the WHOLE (stripped) text as a number after removing every comma.

    Returns ``None`` if the text is not exactly one number (``"7 m"``,
    ``"about 7"``, ``"nan"``, ``""``) or the value is not finite.
    """
    if text is None:
        return None
    if isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        v = float(text)
        return v if math.isfinite(v) else None
    s = extract_answer(text).replace(",", "").strip()
    if not s or not _NUMBER_FULL_RE.fullmatch(s):
        return None
    try:
        v = float(s)
    except (ValueError, OverflowError):
        return None
    return v if math.isfinite(v) else None


def _first_number(text: Any) -> float | None:
    """First number in the text, as the original RL reward finds it (no comma removal)."""
    s = extract_answer(text)
    m = _FIRST_NUMBER_RE.search(s)
    if not m:
        return None
    try:
        v = float(m.group(0).rstrip("."))
    except (ValueError, OverflowError):
        return None
    return v if math.isfinite(v) else None


# --------------------------------------------------------------------------- #
# Per-item scorers (evaluation)
# --------------------------------------------------------------------------- #


def score_multiple_choice(pred: Any, gt: Any) -> float:
    """1.0 iff the first characters of prediction and ground truth match (case-insensitive)."""
    p = extract_answer(pred)
    g = extract_answer(gt)
    if not p or not g:
        return 0.0
    return 1.0 if p[0].casefold() == g[0].casefold() else 0.0


def _has_decimal_or_comma(s: str) -> bool:
    return "." in s or "," in s


def score_numerical(pred: Any, gt: Any) -> float:
    """Exact numeric match after rounding to 2 decimals (see module docstring)."""
    p = extract_answer(pred)
    g = extract_answer(gt)
    if not p or not g:
        return 0.0
    if _has_decimal_or_comma(p) != _has_decimal_or_comma(g):
        return 0.0
    pv = parse_number(p)
    gv = parse_number(g)
    if pv is None or gv is None:
        return 0.0
    try:
        return 1.0 if round(pv, 2) == round(gv, 2) else 0.0
    except (OverflowError, ValueError):  # pragma: no cover - finite floats round fine
        return 0.0


# float32 thresholds exactly as torch.arange(0.5, 0.95 + 0.025, 0.05, dtype=float32)
_MRA_THRESHOLDS = np.array([0.5 + 0.05 * i for i in range(10)], dtype=np.float64).astype(np.float32)
_MRA_TOLERANCE = np.float32(1.0) - _MRA_THRESHOLDS  # float32
_MRA_EPS = np.float32(1e-8)


def mean_relative_accuracy(pred: Any, gt: Any) -> float:
    """MRA over theta in {0.50, 0.55, ..., 0.95}, computed in float32.

    ``pred`` and ``gt`` are numbers (or anything ``float()`` accepts).  Returns
    0.0 for unconvertible or non-finite input.  See module docstring for gt == 0.
    """
    try:
        p = float(pred)
        g = float(gt)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    if not (math.isfinite(p) and math.isfinite(g)):
        return 0.0
    with np.errstate(all="ignore"):
        p32 = np.float32(p)
        g32 = np.float32(g)
        if not (np.isfinite(p32) and np.isfinite(g32)):
            return 0.0
        rel = np.abs(p32 - g32) / (np.abs(g32) + _MRA_EPS)
        passed = int(np.count_nonzero(rel <= _MRA_TOLERANCE))
    return passed / float(_MRA_TOLERANCE.size)


def score_regression(pred: Any, gt: Any) -> float:
    """MRA of two numbers; the whole answer must be a number (commas removed), else 0."""
    pv = parse_number(extract_answer(pred))
    gv = parse_number(extract_answer(gt))
    if pv is None or gv is None:
        return 0.0
    return mean_relative_accuracy(pv, gv)


def score_free_form(pred: Any, gt: Any) -> float:
    """Exact match after whitespace trim and casefold; empty never matches."""
    p = extract_answer(pred).casefold()
    g = extract_answer(gt).casefold()
    if not p or not g:
        return 0.0
    return 1.0 if p == g else 0.0


# SPAR-Bench view_change_infer: five action pairs, net = first - second.
# Source: SPAR-Bench lmms-eval task (lmms_eval/tasks/sparbench/utils.py, compute_vci_metric).
VCI_ACTION_PAIRS = (
    ("move_right", "move_left"),
    ("move_up", "move_down"),
    ("move_forward", "move_backward"),
    ("rotate_right", "rotate_left"),
    ("rotate_up", "rotate_down"),
)
_VCI_KEYS = frozenset(k for pair in VCI_ACTION_PAIRS for k in pair)
_VCI_KEY_SEP_RE = re.compile(r"[\s\-]+")


def _normalise_vci_key(key: str) -> str:
    """``" Move-Right "`` / ``"move right"`` / ``"MOVE_RIGHT"`` -> ``"move_right"``."""
    return _VCI_KEY_SEP_RE.sub("_", key.strip().casefold()).strip("_")


def _parse_vci(text: Any) -> dict[str, float] | None:
    """Parse ``"k:v,k:v"``; ``None`` if malformed.

    Items are separated by ``,``; empty items (e.g. a trailing comma) are skipped.
    Each item must be ``key:value`` with exactly one ``:`` and a value that fully
    parses as a finite number.  Keys are normalised by :func:`_normalise_vci_key`;
    unknown keys are ignored (as the reference does) but at least one of the ten
    known action keys must be present.  A repeated key: the last value wins (as
    the reference's dict does).
    """
    s = extract_answer(text)
    if not s:
        return None
    out: dict[str, float] = {}
    for item in s.split(","):
        item = item.strip()
        if not item:
            continue
        if item.count(":") != 1:
            return None
        k, v = item.split(":")
        v = v.strip()
        if not _NUMBER_FULL_RE.fullmatch(v):
            return None
        try:
            val = float(v)
        except (ValueError, OverflowError):
            return None
        if not math.isfinite(val):
            return None
        key = _normalise_vci_key(k)
        if key in _VCI_KEYS:
            out[key] = val
    if not out:
        return None
    return out


def score_view_change(pred: Any, gt: Any) -> float:
    """SPAR-Bench view-change-inference score.

    For each of the five action pairs the net value is ``d[a] - d[b]`` with a
    missing key counting as 0 (so a pair absent from both sides has net 0 on
    both sides and scores 1.0, as in the SPAR reference, which always averages
    all five pairs).  Score = mean over the five pairs of
    ``mean_relative_accuracy(pred_net, gt_net)`` (gt as the reference; note the
    SPAR reference passes the arguments swapped and uses the absolute error when
    its reference is 0 — we follow the spec's MRA definition instead).  A
    malformed prediction or ground truth (see :func:`_parse_vci`) scores 0.
    """
    try:
        pd_ = _parse_vci(pred)
        gd = _parse_vci(gt)
        if pd_ is None or gd is None:
            return 0.0
        scores = []
        for a, b in VCI_ACTION_PAIRS:
            p_net = pd_.get(a, 0.0) - pd_.get(b, 0.0)
            g_net = gd.get(a, 0.0) - gd.get(b, 0.0)
            scores.append(mean_relative_accuracy(p_net, g_net))
        return float(sum(scores) / len(scores))
    except Exception:  # pragma: no cover - defensive: never crash an evaluation
        return 0.0


def _normalise_problem_type(problem_type: Any) -> str:
    if not isinstance(problem_type, str):
        raise ValueError(f"unknown problem_type {problem_type!r}; expected one of {PROBLEM_TYPES}")
    pt = " ".join(problem_type.strip().lower().split())
    if pt not in PROBLEM_TYPES:
        raise ValueError(f"unknown problem_type {problem_type!r}; expected one of {PROBLEM_TYPES}")
    return pt


_SCORERS = {
    "multiple choice": score_multiple_choice,
    "numerical": score_numerical,
    "regression": score_regression,
    "free-form": score_free_form,
    "vci": score_view_change,
}


def score_answer(pred: Any, gt: Any, problem_type: str) -> float:
    """Evaluation score of one item, dispatching on ``problem_type``.

    ``problem_type`` is matched case-insensitively after trimming; an unknown
    type raises ``ValueError`` (the only way this function raises).
    """
    pt = _normalise_problem_type(problem_type)
    try:
        return float(_SCORERS[pt](pred, gt))
    except Exception:  # pragma: no cover - scorers never raise; belt and braces
        return 0.0


# --------------------------------------------------------------------------- #
# RL accuracy and reward
# --------------------------------------------------------------------------- #


def rl_accuracy(answer: Any, gt: Any, problem_type: Any) -> float:
    """RL accuracy (lenient), as the original reward (verl/utils/reward_score/gcot.py).

    * multiple choice: 1.0 iff the stripped extracted answer equals the stripped
      ground truth exactly (case-sensitive);
    * numerical / regression: first number in each (pattern ``[-+]?\\d*\\.?\\d+``,
      no comma removal, as the original) scored by :func:`mean_relative_accuracy`;
    * vci: :func:`score_view_change`; free-form: :func:`score_free_form`
      (the original gives 0 for these);
    * anything else (including unknown types): 0.0.  Never raises.
    """
    try:
        pt = _normalise_problem_type(problem_type)
    except ValueError:
        return 0.0
    try:
        a = extract_answer(answer)
        g = extract_answer(gt)
        if pt == "multiple choice":
            return 1.0 if (a and a == g) else 0.0
        if pt in ("numerical", "regression"):
            av = _first_number(a)
            gv = _first_number(g)
            if av is None or gv is None:
                return 0.0
            return mean_relative_accuracy(av, gv)
        if pt == "vci":
            return score_view_change(a, g)
        if pt == "free-form":
            return score_free_form(a, g)
    except Exception:  # pragma: no cover - defensive
        return 0.0
    return 0.0  # pragma: no cover


def rl_reward(accuracy: Any, format_ok: Any) -> float:
    """``0.5 * accuracy + 0.5 * format`` if ``accuracy > 0`` else 0.

    ``format_ok`` is a bool (or a number, clipped to [0, 1]; anything else -> 0).
    Non-numeric or non-finite ``accuracy`` -> 0.
    """
    try:
        acc = float(accuracy)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    if not math.isfinite(acc) or acc <= 0.0:
        return 0.0
    if isinstance(format_ok, bool):
        fmt = 1.0 if format_ok else 0.0
    else:
        try:
            fmt = float(format_ok)
        except (TypeError, ValueError, OverflowError):
            fmt = 0.0
        fmt = min(1.0, max(0.0, fmt)) if math.isfinite(fmt) else 0.0
    return 0.5 * acc + 0.5 * fmt
