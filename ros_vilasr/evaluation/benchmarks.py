"""Loaders for the ViLaSR evaluation files (ViLaSR-eval) and the original results.jsonl.

Spec section 8.  Pure Python: no torch, no rclpy.

Evaluation files are a JSON list (``.jsonl``: one object per line) of items with
``question``, ``options`` (multiple choice, optional: SPAR puts them in the
question), ``problem_type``, ``answer``, ``image_path`` (a list; maze and
SpatialEval-Real store a single string, which is accepted), ``data_type``
(single_view | multi_view), ``original_question_type`` (sub-task) and
``grid_size`` (maze).  The original inference reads them as
``benchmark/{vsi_bench,maze,SpatialEval_spatialreal,spar_bench,mmsi_bench}.json``
with image paths relative to one image folder.

Structural problems (not a list, an item that is not an object, a missing or
mistyped required field, an unknown problem_type, duplicate ids) raise
``ValueError`` naming the file, the item index and the field.  Image files are
NOT checked here.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from ros_vilasr.core.aggregates import BENCHMARKS, canonical_benchmark
from ros_vilasr.core.scoring import PROBLEM_TYPES, extract_answer, score_answer

__all__ = [
    "EvalItem",
    "KINDS",
    "infer_benchmark",
    "load_benchmark",
    "read_results_jsonl",
    "score_rows",
]

log = logging.getLogger(__name__)

KINDS = ("single", "video", "views")

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class EvalItem:
    """One evaluation question.

    ``id``: the item's ``id`` field (as a string) if present, else its 0-based
    index in the file (as a string); unique within a file.
    ``image_paths``: absolute paths (``images_root`` joined with the stored
    relative path, normalised; absolute stored paths kept).
    ``kind``: ``"single"`` (one image), ``"video"`` (several frames of a
    VSI-Bench item, or ``data_type == "video"``), ``"views"`` (several images
    otherwise, e.g. ``data_type == "multi_view"``).
    """

    id: str
    benchmark: str
    question: str
    options: list[str] | None
    problem_type: str
    answer: str
    image_paths: list[str]
    data_type: str | None
    sub_task: str | None
    grid_size: int | None
    kind: str
    index: int = field(default=-1, compare=False)


_TOKEN_RULES = (
    (re.compile(r"spatial_?eval_?(?:spatial_?)?real|spatialreal"), "spatialeval_real"),
    (re.compile(r"(?:^|[^a-z0-9])mmsi"), "mmsi_bench"),
    (re.compile(r"(?:^|[^a-z0-9])spar(?:_?bench|$|[^a-z])"), "spar_bench"),
    (re.compile(r"(?:^|[^a-z0-9])vsi"), "vsi_bench"),
    (re.compile(r"(?:^|[^a-z0-9])maze"), "maze"),
)


def infer_benchmark(path: PathLike) -> str:
    """Benchmark name from a file name (``vsi_bench.json`` -> ``"vsi_bench"``).

    Raises ``ValueError`` if the name matches none of :data:`BENCHMARKS` (or is
    a SpatialEval file other than SpatialEval-Real).
    """
    stem = re.sub(r"[\s\-]+", "_", Path(path).name.lower())
    for ext in (".jsonl", ".json"):
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
    direct = canonical_benchmark(stem)
    if direct in BENCHMARKS:
        return direct
    for rx, name in _TOKEN_RULES:
        if rx.search(stem):
            return name
        if name == "spatialeval_real" and "spatialeval" in stem:
            break  # another SpatialEval task (e.g. mazenav): not one of ours
    raise ValueError(
        f"{path}: cannot infer the benchmark from the file name; pass benchmark= "
        f"(one of {', '.join(BENCHMARKS)})"
    )


def _fail(path: PathLike, index: int, fld: str, msg: str) -> ValueError:
    return ValueError(f"{path}: item {index}: field '{fld}': {msg}")


def _type_name(v: Any) -> str:
    return type(v).__name__


def _read_items(path: Path) -> list[Any]:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".jsonl":
        items = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {lineno}: invalid JSON: {e.msg}") from None
        return items
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of items at top level, got {_type_name(data)}")
    return data


def _resolve(root: str, p: str) -> str:
    p = os.path.expanduser(p)
    if not os.path.isabs(p):
        p = os.path.join(root, p)
    return os.path.normpath(os.path.abspath(p))


def _validate(raw: Any, index: int, path: PathLike, bench: str, root: str) -> EvalItem:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}: item {index}: expected a JSON object, got {_type_name(raw)}")

    def req(name: str) -> Any:
        if name not in raw or raw[name] is None:
            raise _fail(path, index, name, "missing")
        return raw[name]

    question = req("question")
    if not isinstance(question, str):
        raise _fail(path, index, "question", f"expected a string, got {_type_name(question)}")

    pt_raw = req("problem_type")
    if not isinstance(pt_raw, str):
        raise _fail(path, index, "problem_type", f"expected a string, got {_type_name(pt_raw)}")
    problem_type = " ".join(pt_raw.strip().lower().split())
    if problem_type not in PROBLEM_TYPES:
        raise _fail(path, index, "problem_type", f"unknown value {pt_raw!r}; expected one of {PROBLEM_TYPES}")

    ans = req("answer")
    if isinstance(ans, bool) or not isinstance(ans, (str, int, float)):
        raise _fail(path, index, "answer", f"expected a string or number, got {_type_name(ans)}")
    answer = ans if isinstance(ans, str) else str(ans)

    imgs = req("image_path")
    if isinstance(imgs, str):
        imgs = [imgs]
    if not isinstance(imgs, list) or not imgs:
        raise _fail(path, index, "image_path", "expected a non-empty list of paths (or one path string)")
    for j, p in enumerate(imgs):
        if not isinstance(p, str) or not p.strip():
            raise _fail(path, index, "image_path", f"entry {j} is not a non-empty string")
    image_paths = [_resolve(root, p) for p in imgs]

    options = raw.get("options")
    if options is not None:
        if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
            raise _fail(path, index, "options", "expected a list of strings or null")
        options = list(options)

    data_type = raw.get("data_type")
    if data_type is not None and not isinstance(data_type, str):
        raise _fail(path, index, "data_type", f"expected a string, got {_type_name(data_type)}")

    sub_task = raw.get("original_question_type")
    if sub_task is not None and not isinstance(sub_task, str):
        raise _fail(path, index, "original_question_type", f"expected a string, got {_type_name(sub_task)}")

    grid = raw.get("grid_size")
    if grid is not None:
        if isinstance(grid, bool):
            raise _fail(path, index, "grid_size", "expected an integer, got bool")
        if isinstance(grid, float) and grid.is_integer():
            grid = int(grid)
        elif isinstance(grid, str) and grid.strip().isdigit():
            grid = int(grid.strip())
        if not isinstance(grid, int) or grid <= 0:
            raise _fail(
                path, index, "grid_size", f"expected a positive integer, got {raw.get('grid_size')!r}"
            )

    raw_id = raw.get("id")
    if raw_id is None:
        item_id = str(index)
    elif isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool):
        item_id = str(raw_id)
    else:
        raise _fail(path, index, "id", f"expected a string or integer, got {_type_name(raw_id)}")

    if len(image_paths) == 1:
        kind = "single"
    elif bench == "vsi_bench" or (data_type or "").strip().lower() == "video":
        kind = "video"
    else:
        kind = "views"

    if problem_type == "multiple choice" and not options and bench != "spar_bench":
        log.debug("%s: item %d: multiple choice without options", path, index)

    return EvalItem(
        id=item_id,
        benchmark=bench,
        question=question,
        options=options,
        problem_type=problem_type,
        answer=answer,
        image_paths=image_paths,
        data_type=data_type,
        sub_task=sub_task,
        grid_size=grid,
        kind=kind,
        index=index,
    )


def load_benchmark(
    path: PathLike, images_root: PathLike | None = None, benchmark: str | None = None
) -> list[EvalItem]:
    """Load and validate one ViLaSR evaluation file.

    ``images_root``: folder the items' image paths are relative to (the original
    ``--image-folder``); ``None`` -> the JSON file's folder.  ``benchmark``:
    name or alias (``"vsibench"``, ``"mmsi"`` ...); inferred from the file name
    when ``None`` (see :func:`infer_benchmark`).  Raises ``ValueError`` for a
    structurally broken file (message names the item index and the field),
    ``FileNotFoundError`` if ``path`` does not exist.
    """
    p = Path(path)
    bench = canonical_benchmark(benchmark) if benchmark else infer_benchmark(p)
    if not bench:
        raise ValueError(f"{path}: empty benchmark name")
    root = (
        os.path.abspath(os.path.expanduser(str(images_root)))
        if images_root is not None
        else str(p.resolve().parent)
    )
    raw_items = _read_items(p)
    items: list[EvalItem] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_items):
        item = _validate(raw, i, p, bench, root)
        if item.id in seen:
            raise _fail(p, i, "id", f"duplicate id {item.id!r} (also item {seen[item.id]})")
        seen[item.id] = i
        items.append(item)
    if not items:
        log.warning("%s: no items", p)
    return items


def _opt_str(v: Any) -> str | None:
    if v is None:
        return None
    return v if isinstance(v, str) else str(v)


def read_results_jsonl(path: PathLike) -> list[dict[str, Any]]:
    """Read the original evaluation's ``results.jsonl`` (eval/infer.py output).

    Each line is the input item plus ``model_output`` (the last assistant turn).
    Returns one dict per line::

        {"line": 1-based line number, "id": str | None, "model_output": str,
         "prediction": extract_answer(model_output), "answer": str,
         "problem_type": normalised str | None, "original_question_type": str | None,
         "data_type": str | None}

    A missing/None ``model_output`` gives prediction ``""`` (scores 0); a
    missing ``answer`` gives ``""``.  Blank lines are skipped; a truncated LAST
    line (an interrupted run) is skipped with a warning; any other invalid line
    raises ``ValueError`` naming the line.
    """
    p = Path(path)
    lines = p.read_text(encoding="utf-8").splitlines()
    last = max((i for i, ln in enumerate(lines) if ln.strip()), default=-1)
    rows: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        lineno = i + 1
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if i == last:
                log.warning("%s: line %d: truncated last line skipped (%s)", p, lineno, e.msg)
                continue
            raise ValueError(f"{p}: line {lineno}: invalid JSON: {e.msg}") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{p}: line {lineno}: expected a JSON object, got {_type_name(rec)}")
        mo = rec.get("model_output")
        model_output = "" if mo is None else (mo if isinstance(mo, str) else str(mo))
        ans = rec.get("answer")
        if ans is None:
            log.warning("%s: line %d: no 'answer' field", p, lineno)
        pt = rec.get("problem_type")
        pt = " ".join(pt.strip().lower().split()) if isinstance(pt, str) else None
        rid = rec.get("id")
        rows.append(
            {
                "line": lineno,
                "id": None if rid is None else str(rid),
                "model_output": model_output,
                "prediction": extract_answer(model_output),
                "answer": "" if ans is None else _opt_str(ans),
                "problem_type": pt,
                "original_question_type": _opt_str(rec.get("original_question_type")),
                "data_type": _opt_str(rec.get("data_type")),
            }
        )
    return rows


def score_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``rows`` (as from :func:`read_results_jsonl`) with ``score`` added.

    Uses ``prediction`` (or ``extract_answer(model_output)``), ``answer`` and
    ``problem_type``.  A row whose problem_type is missing or unknown scores 0
    and gets ``score_error`` set; never raises.
    """
    out = []
    for r in rows:
        row = dict(r)
        pred = row.get("prediction")
        if pred is None:
            pred = extract_answer(row.get("model_output"))
        try:
            row["score"] = score_answer(pred, row.get("answer"), row.get("problem_type"))
        except ValueError as e:
            row["score"] = 0.0
            row["score_error"] = str(e)
        out.append(row)
    return out
