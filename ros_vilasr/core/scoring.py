"""Answer scoring (evaluation), RL accuracy/reward and benchmark aggregates.

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
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .protocol import extract_answer

__all__ = [
    "PROBLEM_TYPES",
    "BENCHMARKS",
    "VSI_TASKS",
    "VSI_TASK_OF",
    "SPAR_LEVELS",
    "SPAR_LEVEL_OF",
    "VCI_ACTION_PAIRS",
    "extract_answer",
    "parse_number",
    "canonical_benchmark",
    "score_multiple_choice",
    "score_numerical",
    "mean_relative_accuracy",
    "score_regression",
    "score_free_form",
    "score_view_change",
    "score_answer",
    "rl_accuracy",
    "rl_reward",
    "aggregate",
    "format_table",
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


# --------------------------------------------------------------------------- #
# Benchmarks and aggregates
# --------------------------------------------------------------------------- #

BENCHMARKS = ("maze", "spatialeval_real", "vsi_bench", "spar_bench", "mmsi_bench")

_BENCHMARK_ALIASES = {
    "maze": "maze",
    "spatialeval_real": "spatialeval_real",
    "spatialeval_spatialreal": "spatialeval_real",
    "spatialreal": "spatialeval_real",
    "spatial_eval_real": "spatialeval_real",
    "vsi_bench": "vsi_bench",
    "vsibench": "vsi_bench",
    "vsi": "vsi_bench",
    "spar_bench": "spar_bench",
    "sparbench": "spar_bench",
    "spar": "spar_bench",
    "spar_bench_tiny": "spar_bench",
    "sparbench_tiny": "spar_bench",
    "mmsi_bench": "mmsi_bench",
    "mmsibench": "mmsi_bench",
    "mmsi": "mmsi_bench",
}


def canonical_benchmark(name: Any) -> str:
    """Canonical benchmark name (one of :data:`BENCHMARKS`), or the lower-cased
    input (``-``/space -> ``_``) for a benchmark we have no special rules for."""
    s = re.sub(r"[\s\-]+", "_", str(name or "").strip().lower())
    return _BENCHMARK_ALIASES.get(s, s)


# VSI-Bench: the 8 reported tasks, in the paper's column order, and the mapping
# from the dataset's ``question_type`` values (thinking-in-space VSI-Bench,
# lmms-eval vsibench utils) to them.  The three rel_direction variants are
# merged as the official aggregate does: rel_direction = unweighted mean of the
# easy, medium and hard means (of those present).
VSI_TASKS = (
    "rel_distance",
    "rel_direction",
    "route_planning",
    "appearance_order",
    "counting",
    "abs_distance",
    "object_size",
    "room_size",
)
VSI_TASK_OF: dict[str, str] = {
    "object_rel_distance": "rel_distance",
    "object_rel_direction": "rel_direction",
    "object_rel_direction_easy": "rel_direction",
    "object_rel_direction_medium": "rel_direction",
    "object_rel_direction_hard": "rel_direction",
    "route_planning": "route_planning",
    "obj_appearance_order": "appearance_order",
    "object_appearance_order": "appearance_order",
    "object_counting": "counting",
    "object_abs_distance": "abs_distance",
    "object_size_estimation": "object_size",
    "room_size_estimation": "room_size",
}
VSI_TASK_OF.update({t: t for t in VSI_TASKS})

# SPAR-Bench task types and their cognitive levels.  Source: SPAR-Bench's
# lmms-eval task (lmms_eval/tasks/sparbench/utils.py: Low / Middle / High lists);
# the spec calls the middle level "Medium", so do we.
SPAR_LEVELS: dict[str, tuple] = {
    "Low": (
        "depth_prediction_oc",
        "depth_prediction_oo",
        "distance_prediction_oc",
        "distance_prediction_oo",
        "depth_prediction_oc_mv",
        "depth_prediction_oo_mv",
        "distance_prediction_oo_mv",
        "distance_prediction_oc_mv",
    ),
    "Medium": (
        "view_change_infer",
        "position_matching",
        "camera_motion_infer",
    ),
    "High": (
        "obj_spatial_relation_oo",
        "obj_spatial_relation_oc_mv",
        "obj_spatial_relation_oo_mv",
        "spatial_imagination_oc",
        "spatial_imagination_oo",
        "spatial_imagination_oc_mv",
        "spatial_imagination_oo_mv",
        "distance_infer_center_oo",
        "distance_infer_center_oo_mv",
    ),
}
SPAR_LEVEL_OF: dict[str, str] = {t: lvl for lvl, ts in SPAR_LEVELS.items() for t in ts}

_UNKNOWN_TASK = "unknown"


def _row_score(row: Mapping[str, Any]) -> float:
    """A row's score: an int/float (numpy scalars included); anything else -> 0."""
    v = row.get("score")
    if not isinstance(v, (int, float, np.integer, np.floating)):
        return 0.0
    v = float(v)
    return v if math.isfinite(v) else 0.0


def _row_task(row: Mapping[str, Any]) -> str:
    try:
        st = row.get("original_question_type")
        if st is None:
            st = row.get("sub_task")
    except AttributeError:
        return _UNKNOWN_TASK
    if st is None:
        return _UNKNOWN_TASK
    st = str(st).strip()
    return st or _UNKNOWN_TASK


def _mean(xs: Iterable[float]) -> float:
    xs = list(xs)
    return float(sum(xs) / len(xs)) if xs else 0.0


def _ordered(d: dict[str, Any], order: Iterable[str]) -> dict[str, Any]:
    order = list(order)
    out = {k: d[k] for k in order if k in d}
    for k in sorted(d):
        if k not in out:
            out[k] = d[k]
    return out


def aggregate(benchmark: str, rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Benchmark summary from per-item rows.

    Each row is a mapping with ``score`` (a number in [0, 1]; missing, None,
    NaN or a non-number such as a string -> 0)
    and ``original_question_type`` (sub-task; ``sub_task`` accepted too; missing
    -> ``"unknown"``).  Returns::

        {"benchmark": canonical name, "overall": float, "per_task": {task: mean},
         "groups": {group: mean}, "sub_tasks": {raw sub-task: mean},
         "counts": {task: n}, "n": total, "missing": [expected tasks with no rows]}

    * VSI-Bench: ``per_task`` holds the 8 tasks of :data:`VSI_TASKS` (raw names
      mapped by :data:`VSI_TASK_OF`; rel_direction = mean of its variant means);
      an unmapped sub-task is kept under its own name.  overall = unweighted mean
      of the ``per_task`` means present (a partial run averages the tasks it has;
      ``missing`` lists the absent ones).  groups = {}.
    * SPAR-Bench: ``per_task`` = mean per raw task type; overall = unweighted
      mean of those; groups = Low / Medium / High = unweighted mean of the
      member types present (:data:`SPAR_LEVELS`; unlisted types are in overall
      but in no group; a level with no member present is omitted).
    * anything else (maze, spatialeval_real, mmsi_bench, custom): overall =
      mean over all rows; ``per_task`` = per sub-task means (informational).

    Scores are fractions in [0, 1]; an empty ``rows`` gives overall 0.0, n 0.
    """
    bench = canonical_benchmark(benchmark)
    raw_scores: dict[str, list[float]] = defaultdict(list)
    all_scores: list[float] = []
    for row in rows:
        s = _row_score(row) if isinstance(row, Mapping) else 0.0
        t = _row_task(row) if isinstance(row, Mapping) else _UNKNOWN_TASK
        raw_scores[t].append(s)
        all_scores.append(s)
    raw_means = {t: _mean(v) for t, v in raw_scores.items()}
    raw_counts = {t: len(v) for t, v in raw_scores.items()}

    groups: dict[str, float] = {}
    if bench == "vsi_bench":
        members: dict[str, list[str]] = defaultdict(list)
        for t in raw_means:
            members[VSI_TASK_OF.get(t, t)].append(t)
        per_task = _ordered(
            {task: _mean(raw_means[t] for t in ts) for task, ts in members.items()}, VSI_TASKS
        )
        counts = _ordered({task: sum(raw_counts[t] for t in ts) for task, ts in members.items()}, VSI_TASKS)
        overall = _mean(per_task.values())
        sub_tasks = _ordered(raw_means, list(VSI_TASK_OF))
        missing = [t for t in VSI_TASKS if t not in per_task]
    elif bench == "spar_bench":
        order = [t for ts in SPAR_LEVELS.values() for t in ts]
        per_task = _ordered(raw_means, order)
        counts = _ordered(raw_counts, order)
        overall = _mean(per_task.values())
        for level, ts in SPAR_LEVELS.items():
            present = [per_task[t] for t in ts if t in per_task]
            if present:
                groups[level] = _mean(present)
        sub_tasks = dict(per_task)
        missing = [t for t in order if t not in per_task]
    else:
        per_task = _ordered(raw_means, [])
        counts = _ordered(raw_counts, [])
        overall = _mean(all_scores)
        sub_tasks = dict(per_task)
        missing = []

    return {
        "benchmark": bench,
        "overall": overall,
        "per_task": per_task,
        "groups": groups,
        "sub_tasks": sub_tasks,
        "counts": counts,
        "n": len(all_scores),
        "missing": missing,
    }


def format_table(summary: Mapping[str, Any]) -> str:
    """Plain-text aligned table of an :func:`aggregate` summary (scores x100, 1 decimal)."""

    def pct(v: Any) -> str:
        try:
            f = float(v)
        except (TypeError, ValueError):
            return "-"
        return f"{100.0 * f:.1f}" if math.isfinite(f) else "-"

    per_task = dict(summary.get("per_task") or {})
    groups = dict(summary.get("groups") or {})
    counts = dict(summary.get("counts") or {})
    names = list(per_task) + list(groups) + ["overall", "sub-task"]
    w = max(len(str(n)) for n in names)
    nw = max([len(str(summary.get("n", ""))), 5] + [len(str(c)) for c in counts.values()])
    sw = 6
    sep = "-" * (w + 2 + nw + 2 + sw)
    lines = [
        f"benchmark: {summary.get('benchmark', '?')}",
        f"{'sub-task':<{w}}  {'n':>{nw}}  {'score':>{sw}}",
        sep,
    ]
    for name, v in per_task.items():
        lines.append(f"{name:<{w}}  {str(counts.get(name, '')):>{nw}}  {pct(v):>{sw}}")
    lines.append(sep)
    for name, v in groups.items():
        lines.append(f"{name:<{w}}  {'':>{nw}}  {pct(v):>{sw}}")
    lines.append(f"{'overall':<{w}}  {str(summary.get('n', '')):>{nw}}  {pct(summary.get('overall')):>{sw}}")
    missing = summary.get("missing") or []
    if missing:
        lines.append(f"missing (not in overall): {', '.join(map(str, missing))}")
    return "\n".join(lines)
