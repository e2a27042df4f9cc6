"""Benchmark aggregates (protocol spec section 6): per-item scores into each benchmark's summary —
VSI-Bench's eight tasks, SPAR-Bench's three levels, a pooled mean for the others — and its table.

Pure Python + numpy: no torch, no rclpy.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

__all__ = ["BENCHMARKS", "VSI_TASKS", "VSI_TASK_OF", "SPAR_LEVELS", "SPAR_LEVEL_OF", "canonical_benchmark",
           "aggregate", "format_table"]

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
