"""The recipe's evaluation record: per-stage summaries of held-out dialogues, pass@k, the chance and
best-constant baselines, bootstrap intervals, and the report (JSON, Markdown table, plot).

Held-out sets are small (16 items per sub-task in ``recipe_embedded``), so a few points between
stages can be noise: the report gives each family mean a 95% bootstrap interval and each later
stage's change from the first a paired one (the same resampled items for every stage).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from ros_vilasr.core import protocol
from ros_vilasr.core.scoring import score_answer
from ros_vilasr.evaluation.runner import RESULTS_FILE, unique_rows

FAMILIES = ("maze", "scene")  # the families the report averages
BOOTSTRAP_DRAWS = 2000


# -- per-stage summaries and baselines -------------------------------------------------------------

def family(task: str) -> str:
    """maze, look or ask (one-turn pretraining questions, not in either mean) or scene."""
    return next((f for f in ("maze", "look", "ask") if task.startswith(f)), "scene")


def heldout_items(data: Path) -> list:
    """Every held-out item of a recipe's data directory (``heldout/<family>/eval.json``)."""
    from ros_vilasr.evaluation.benchmarks import load_benchmark

    items = []
    for path in sorted(data.glob("heldout/*/eval.json")):
        items += load_benchmark(path, benchmark=path.parent.name)
    return items


def drawing_turns(row: dict) -> tuple[int, int]:
    """(drawing turns that executed, model turns that failed): a drawing executed when the session
    answered it with a new image; the last turn failed when the dialogue ended on it with a
    tool error, a bad index or the token limit."""
    turns = [m for m in row["conversations"] if m.get("role", m.get("from")) in ("assistant", "gpt")]
    executed = sum(protocol.parse_turn(m.get("content", m.get("value", ""))).action in protocol.TOOLS
                   for m in turns[:-1])
    failed = int(row["finish_reason"] in ("tool_error", "bad_index", "length"))
    return executed, failed


def summarize_rows(rows: list[dict]) -> dict:
    by_task = defaultdict(list)
    for row in rows:
        by_task[row["original_question_type"]].append(row)
    executed, failed = map(sum, zip(*(drawing_turns(r) for r in rows))) if rows else (0, 0)
    return {
        "accuracy": {t: float(np.mean([r["score"] for r in rs])) for t, rs in sorted(by_task.items())},
        "n": {t: len(rs) for t, rs in sorted(by_task.items())},
        "executable_drawing_turns": executed / max(executed + failed, 1),
        "mean_turns": float(np.mean([r["calls"] for r in rows])) if rows else 0.0,
        "finish_reasons": dict(Counter(r["finish_reason"] for r in rows)),
    }


def pass_at_k(rows: list[dict]) -> dict:
    """pass@1 (mean over the samples) and pass@k (any sample right) per sub-task."""
    per_item = defaultdict(list)
    task_of = {}
    for row in rows:
        base = row["id"].rsplit("#", 1)[0]
        per_item[base].append(row["score"] >= 1.0)
        task_of[base] = row["original_question_type"]
    by_task = defaultdict(list)
    for base, hits in per_item.items():
        by_task[task_of[base]].append((np.mean(hits), any(hits)))
    return {t: {"pass@1": float(np.mean([a for a, _ in v])), f"pass@{max(map(len, per_item.values()))}":
                float(np.mean([b for _, b in v]))} for t, v in sorted(by_task.items())}


def baselines(data: Path) -> dict[str, dict]:
    """Per sub-task, two baselines scored on the held-out items: ``chance`` (uniform guessing over
    the options; for open questions the best constant) and ``constant`` (the best constant answer
    learned from the training answers alone: the most frequent one, or the median for regression's
    relative accuracy) — what a model gets from the answer distribution without looking."""
    answers = defaultdict(list)
    for path in data.glob("train/*/eval.json"):
        for item in json.loads(path.read_text()):
            answers[item["original_question_type"]].append(item["answer"])
    scores = {"chance": defaultdict(list), "constant": defaultdict(list)}
    for item in heldout_items(data):
        seen = answers.get(item.sub_task) or ["0"]
        guess = (f"{np.median([float(a) for a in seen]):g}" if item.problem_type == "regression"
                 else Counter(seen).most_common(1)[0][0])
        constant = score_answer(guess, item.answer, item.problem_type)
        scores["constant"][item.sub_task].append(constant)
        scores["chance"][item.sub_task].append(1 / len(item.options) if item.options else constant)
    return {name: {t: float(np.mean(s)) for t, s in sorted(per_task.items())} for name, per_task in scores.items()}


def intervals(rows_by_stage: dict[str, list[dict]], draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> dict:
    """Per family: each stage's mean accuracy as a 95% bootstrap interval, and each stage's change
    from the first stage as a paired one. Items are resampled within their sub-task (a family mean
    is the mean of its sub-tasks' accuracies), the same draw for every stage; only items every
    stage answered count."""
    stages = list(rows_by_stage)
    scores = {s: {r["id"]: r["score"] for r in rows} for s, rows in rows_by_stage.items()}
    common = set.intersection(*(set(v) for v in scores.values())) if scores else set()
    by_task = defaultdict(list)
    for row in rows_by_stage[stages[0]] if stages else []:
        if row["id"] in common:
            by_task[row["original_question_type"]].append(row["id"])
    rng = np.random.default_rng(seed)
    out = {}
    for fam in FAMILIES:
        tasks = sorted(t for t in by_task if family(t) == fam)
        if not tasks:
            continue
        means = np.zeros((draws, len(stages)))
        for t in tasks:
            table = np.array([[scores[s][i] for s in stages] for i in by_task[t]])  # items x stages
            means += table[rng.integers(len(table), size=(draws, len(table)))].mean(axis=1)
        means /= len(tasks)
        low, high = np.percentile(means, [2.5, 97.5], axis=0)
        change_low, change_high = np.percentile(means - means[:, :1], [2.5, 97.5], axis=0)
        out[fam] = {s: {"low": float(low[k]), "high": float(high[k]), "change_low": float(change_low[k]),
                        "change_high": float(change_high[k])} for k, s in enumerate(stages)}
    return out


# -- report ----------------------------------------------------------------------------------------

def write_report(out: Path, stages: tuple[str, ...], data: Path, unchanged: dict[str, str] | None = None) -> dict:
    """``out/report.{json,md,png}`` from the evaluation steps of a recipe run in ``out``;
    ``unchanged``: stage -> the stage whose model it passed through untrained."""
    summaries = {s: json.loads((out / f"eval_{s}" / "stage_summary.json").read_text()) for s in stages}
    passk = {s: json.loads(p.read_text()) for s in stages if (p := out / f"passk_{s}" / "passk.json").is_file()}
    base, constant = baselines(data).values()
    rows = {s: unique_rows([json.loads(line) for line in (out / f"eval_{s}" / RESULTS_FILE).read_text().splitlines()])
            for s in stages}
    report = {"chance": base, "constant": constant, "stages": summaries, "pass_at_k": passk,
              "intervals": intervals(rows), "unchanged": unchanged or {},
              "wall_s": json.loads((out / "timing.json").read_text()) if (out / "timing.json").is_file() else {}}
    for summary in summaries.values():
        acc = summary["accuracy"]
        for fam in FAMILIES:
            tasks = [t for t in acc if family(t) == fam]
            summary[f"{fam}_mean"] = float(np.mean([acc[t] for t in tasks])) if tasks else None
            summary[f"{fam}_chance_mean"] = float(np.mean([base[t] for t in tasks])) if tasks else None
    (out / "report.json").write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    (out / "report.md").write_text(report_markdown(report))
    plot_report(report, out / "report.png")
    return report


def report_markdown(report: dict) -> str:
    stages, base, constant = report["stages"], report["chance"], report.get("constant", {})
    tasks = sorted(base)
    lines = ["| sub-task | n | chance | best constant | " + " | ".join(f"after {s}" for s in stages) + " |",
             "|---|---|---|---|" + "---|" * len(stages)]
    for t in tasks:
        n = next(iter(stages.values()))["n"].get(t, 0)
        lines.append(f"| {t} | {n} | {base[t]:.1%} | {constant.get(t, 0):.1%} | " +
                     " | ".join(f"{v['accuracy'].get(t, 0):.1%}" for v in stages.values()) + " |")
    first = next(iter(stages))
    for fam in FAMILIES:
        tasks_of = [t for t in tasks if family(t) == fam]
        if not tasks_of:  # a recipe without this family
            continue
        const = float(np.mean([constant.get(t, 0) for t in tasks_of]))
        lines.append(f"| **{fam} mean** | | {stages[first][f'{fam}_chance_mean']:.1%} | {const:.1%} | " +
                     " | ".join(f"**{v[f'{fam}_mean']:.1%}**" for v in stages.values()) + " |")
        if fam in report.get("intervals", {}):  # 95% bootstrap intervals, in points
            ci = report["intervals"][fam]
            lines.append(f"| {fam} mean: 95% interval | | | | " +
                         " | ".join(f"{100 * ci[s]['low']:.0f}–{100 * ci[s]['high']:.0f}" for s in stages) + " |")
            lines.append(f"| {fam}: change from {first} (paired 95% interval, points) | | | | — | " +
                         " | ".join(f"{100 * (stages[s][f'{fam}_mean'] - stages[first][f'{fam}_mean']):+.1f} "
                                    f"({100 * ci[s]['change_low']:+.0f} to {100 * ci[s]['change_high']:+.0f})"
                                    for s in list(stages)[1:]) + " |")
    lines.append("| drawing turns executable | | | | " +
                 " | ".join(f"{v['executable_drawing_turns']:.1%}" for v in stages.values()) + " |")
    lines.append("| mean model turns | | | | " + " | ".join(f"{v['mean_turns']:.2f}" for v in stages.values()) + " |")
    lines += [f"\n{s} trained nothing (it kept too few trajectories to fine-tune on): its model is {before}'s, "
              "unchanged." for s, before in report.get("unchanged", {}).items()]
    if report["pass_at_k"]:
        lines += ["", "| stage | sub-task | pass@1 | pass@k |", "|---|---|---|---|"]
        for s, per_task in report["pass_at_k"].items():
            for t, v in per_task.items():
                p1, pk = v["pass@1"], next(x for k, x in v.items() if k != "pass@1")
                lines.append(f"| {s} | {t} | {p1:.1%} | {pk:.1%} |")
    return "\n".join(lines) + "\n"


def plot_report(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks, stages = sorted(report["chance"]), list(report["stages"])
    x = np.arange(len(tasks))
    width = 0.8 / (len(stages) + 1)
    fig, ax = plt.subplots(figsize=(max(8, len(tasks) * 1.1), 4.5))
    ax.bar(x, [report["chance"][t] for t in tasks], width, color="0.75", label="chance")
    ax.scatter(x, [report.get("constant", {}).get(t, 0) for t in tasks], marker="_", s=300, color="k", zorder=3,
               label="best constant answer")
    for i, s in enumerate(stages, start=1):
        ax.bar(x + i * width, [report["stages"][s]["accuracy"].get(t, 0) for t in tasks], width, label=f"after {s}")
    ax.set_xticks(x + width * len(stages) / 2, tasks, rotation=30, ha="right")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1)
    ax.legend(ncols=len(stages) + 1, fontsize=8)
    ax.set_title("embedded model: held-out accuracy per stage")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
