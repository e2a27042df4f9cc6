"""PNG plots of an evaluation: score per sub-task, model calls and images per question, finish
reasons. Figures are built with matplotlib's object API on the Agg canvas, so no display and no
global pyplot state are involved."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _figure(width: float = 7.0, height: float = 4.0):
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _bar(path: Path, labels: list[str], values: list[float], title: str, ylabel: str, ylim=None) -> Path:
    fig, ax = _figure(max(5.0, 0.6 * len(labels) + 2))
    ax.bar(range(len(labels)), values, color="tab:blue")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    for x, v in enumerate(values):
        ax.annotate(f"{v:.1f}" if isinstance(v, float) else str(v), (x, v), ha="center", va="bottom",
                    fontsize=8)
    return _save(fig, path)


def _histogram(path: Path, values: list[int], title: str, xlabel: str) -> Path:
    fig, ax = _figure()
    if values:
        lo, hi = min(values), max(values)
        ax.hist(values, bins=[b - 0.5 for b in range(lo, hi + 2)], color="tab:green", edgecolor="black")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("questions")
    return _save(fig, path)


def write_plots(rows: list[dict], summary: dict, out_dir: str | Path) -> list[Path]:
    """Four PNGs in ``out_dir``; returns their paths."""
    out = Path(out_dir)
    per_task = summary.get("per_task") or {}
    tasks = [*per_task, "overall"]
    scores = [100.0 * v for v in per_task.values()] + [100.0 * summary.get("overall", 0.0)]
    reasons = Counter(str(r.get("finish_reason")) for r in rows)
    return [
        _bar(out / "scores.png", tasks, scores, f"{summary.get('benchmark', '')}: score per sub-task",
             "score (%)", ylim=(0, 105)),
        _histogram(out / "calls.png", [int(r.get("calls", 0)) for r in rows], "model calls per question",
                   "model calls"),
        _histogram(out / "images.png", [int(r.get("images", 0)) for r in rows], "images per question",
                   "images in the dialogue"),
        _bar(out / "finish_reasons.png", sorted(reasons), [reasons[k] for k in sorted(reasons)],
             "finish reasons", "questions"),
    ]
