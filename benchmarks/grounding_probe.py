"""Can the embedded architecture find a *named* object in a room? A diagnostic for issue 13.

The position probe (``position_probe.py``) showed that the embedded model's shape reads where a red
square is on plain grey once the text model's ``rope_theta`` is small. Drawing a box around "the
chair" needs more: finding it among walls, floor and other furniture, and knowing which blob the
name means. Here randomly initialised models of the embedded model's shape learn one task on the
demo's world — a rig camera's view of a random room (``synth.rig_tasks``), shrunk to 224x168 (48
visual tokens), the question "Where is the {name}?", the answer the object's box centre x as three
digits — per task (one name, any name, any name with the answer saying the name right before its
x) and per curriculum (the real views throughout, or the named object alone on grey first with
everything else fading in).

Held-out views (other rooms and rig poses, never faded) are scored by the mean absolute error of
the predicted x (digits read greedily, each after the true digits before it), beside two models
that cannot have learned the task: the best constant (the training answers' median), and one that
sees the image but not the name (the median of the view's clearly visible objects).

    python benchmarks/grounding_probe.py --workers 2   # the committed results: 6 runs, ~45 min on 2 cores
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import multiprocessing
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.machine import describe, markdown, write_results  # noqa: E402
from ros_vilasr.core.encoding import encode_dialogue  # noqa: E402
from ros_vilasr.core.models import EMBEDDED_DIR  # noqa: E402
from ros_vilasr.core.processor import load_processor  # noqa: E402
from ros_vilasr.synth import rig_tasks as rt  # noqa: E402
from ros_vilasr.synth.trajectories import Reject  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SIZE = (224, 168)
BATCH, LR = 8, 1e-3
GREY = 128.0


@dataclasses.dataclass
class View:
    image: np.ndarray  # (H, W, 3) uint8 at SIZE
    ids: np.ndarray  # (H, W) int8: the object each pixel shows (index into objects), -1 for the room
    objects: tuple[str, ...]
    centres: dict[str, int]  # each clearly visible object's box centre x

    @property
    def names(self) -> np.ndarray:
        """(H, W) str: the object each pixel shows, "" for the room (walls, floor)."""
        return np.array(["", *self.objects])[self.ids + 1]

    def faded(self, name: str, contrast: float) -> Image.Image:
        """The view with everything but ``name`` blended toward plain grey (0: the object alone on
        grey, 1: the real view)."""
        image, rest = self.image.astype(np.float32), self.ids != self.objects.index(name)
        image[rest] = GREY + contrast * (image[rest] - GREY)
        return Image.fromarray(image.round().astype(np.uint8))


def views(n_scenes: int, seed: int) -> list[View]:
    """Per camera view of a random room: the shrunk image, what each pixel shows and the objects' centres."""
    rng, out = np.random.default_rng(seed), []
    scale = SIZE[0] / rt.GRID[0]
    for _ in range(n_scenes):
        room, cameras = rt.rig_cameras(rng)
        try:
            v = rt.render_views(rt.random_rig_scene(rng, room), cameras)
        except Reject:  # furniture that did not fit this room
            continue
        for cam, image in enumerate(v.images):
            centres = {n: round((v.boxes[cam][n][0] + v.boxes[cam][n][2]) / 2 * scale)
                       for n in v.scene.names if v.visible(cam, n)}
            if centres:
                ids = Image.fromarray(v.object_ids[cam]).resize(SIZE, Image.Resampling.NEAREST)
                out.append(View(np.asarray(image.resize(SIZE, Image.Resampling.BICUBIC)),
                                np.asarray(ids).astype(np.int8), tuple(v.scene.names), centres))
    return out


def example(processor, image: Image.Image, name: str, x: int, say_name: bool = False):
    """The question and its answer; ``say_name``: the answer names the object first, right before
    the digits (as a box's label can precede its coordinates)."""
    answer = f"{name}{x:03d}" if say_name else f"x = {x:03d}"
    messages = [{"role": "user", "content": [{"type": "image", "index": 0},
                                             {"type": "text", "text": f"Where is the {name}?"}]},
                {"role": "assistant", "content": answer}]
    return encode_dialogue(processor, messages, [image])


def digit_logits(model, encoding) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits at the answer's three digits (teacher-forced) and their target ids."""
    out = model(**encoding.model_inputs())
    supervised = [i for i, m in enumerate(encoding.loss_mask[1:]) if m][-4:-1]  # the digits, not <|im_end|>
    return out.logits[0, supervised], torch.tensor(encoding.input_ids[1:])[supervised]


def evaluate(model, processor, heldout, digit_ids: list[int], say_name: bool) -> float:
    """Mean absolute error (grid pixels) of the greedily read x over every held-out (view, object)."""
    errors = []
    model.eval()
    with torch.no_grad():
        for view in heldout:
            image = Image.fromarray(view.image)
            for name, x in view.centres.items():
                logits, _ = digit_logits(model, example(processor, image, name, x, say_name))
                digits = logits[:, digit_ids].argmax(-1).tolist()
                errors.append(abs(int("".join(map(str, digits))) - x))
    model.train()
    return float(np.mean(errors))


def only(views_, names: list[str] | None):
    """The views that show one of ``names`` (all names: None), with just those objects."""
    if names is None:
        return views_
    kept = [dataclasses.replace(v, centres={n: x for n, x in v.centres.items() if n in names}) for v in views_]
    return [v for v in kept if v.centres]


def baselines(train, heldout) -> dict:
    median = float(np.median([x for v in train for x in v.centres.values()]))
    constant = np.mean([abs(x - median) for v in heldout for x in v.centres.values()])
    # the best a model can do that sees every object but not the name: the median of the view's objects
    blind = np.mean([abs(x - np.median(list(v.centres.values()))) for v in heldout for x in v.centres.values()])
    return {"best_constant": float(constant), "sees_the_image_not_the_name": float(blind)}


def contrast(curriculum: str, step: int, args, rng: random.Random) -> float:
    """How much of everything but the named object an example shows (see ``View.faded``)."""
    if curriculum == "ramp":  # the object alone for ``plain`` steps, then the rest fades in over ``fade``
        return min(1.0, max(0.0, (step - args.plain) / args.fade))
    return rng.random() if curriculum == "mix" else 1.0  # mix: every contrast, all along


def train(args, label: str, say_name: bool, curriculum: str, processor, pool, heldout) -> dict:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    config = Qwen2_5_VLConfig.from_pretrained(EMBEDDED_DIR)
    config.text_config.rope_parameters["rope_theta"] = args.theta
    model = Qwen2_5_VLForConditionalGeneration(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    digit_ids = [processor.tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)]
    curve, evals, start = [], [], time.monotonic()
    for step in range(1, args.steps + 1):
        losses = []
        for _ in range(BATCH):
            view = rng.choice(pool)
            name = rng.choice(sorted(view.centres))
            image = view.faded(name, contrast(curriculum, step, args, rng))
            logits, targets = digit_logits(model, example(processor, image, name, view.centres[name], say_name))
            losses.append(torch.nn.functional.cross_entropy(logits, targets, reduction="none"))
        losses = torch.stack(losses)
        losses.mean().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        curve.append(losses.mean(0).tolist())
        if step % args.eval_every == 0 or step == args.steps:
            evals.append((step, evaluate(model, processor, heldout, digit_ids, say_name)))
            print(f"{label}, step {step}: digit loss {np.round(np.mean(curve[-args.eval_every:], 0), 3)}, held-out MAE "
                  f"{evals[-1][1]:.1f} px ({time.monotonic() - start:.0f} s)", flush=True)
    return {"curve": curve, "evals": evals, "seconds": time.monotonic() - start}


# task: (the names asked about, None for all; whether the answer names the object right before x)
TASKS = {"the chair only": (["chair"], False), "any object": (None, False),
         "any object, named before x": (None, True)}
CURRICULA = ("none", "ramp", "mix")
_worker: dict = {}


def load_views(args, threads: int | None = None) -> None:
    """Per process: the processor and the training / held-out views (and, in a pool, one thread)."""
    if threads:
        torch.set_num_threads(threads)
    _worker.update(processor=load_processor(EMBEDDED_DIR, max_pixels=SIZE[0] * SIZE[1]),
                   pool=views(args.scenes, seed=1), heldout=views(args.heldout_scenes, seed=2))


def run(args, task: str, curriculum: str) -> dict:
    names, say_name = TASKS[task]
    train_views, test = only(_worker["pool"], names), only(_worker["heldout"], names)
    questions = sum(len(v.centres) for v in test)
    label = f"{task} · {curriculum}"
    print(f"{label}: {len(train_views)} training views, {questions} held-out questions", flush=True)
    return {"task": task, "curriculum": curriculum, "train_views": len(train_views), "heldout_questions": questions,
            "baselines": baselines(train_views, test),
            **train(args, label, say_name, curriculum, _worker["processor"], train_views, test)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2500, help="per run")
    parser.add_argument("--scenes", type=int, default=2000, help="training rooms (two views each)")
    parser.add_argument("--heldout-scenes", type=int, default=50)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--curricula", nargs="+", choices=CURRICULA, default=["none", "ramp"])
    parser.add_argument("--plain", type=int, default=300, help="ramp: steps with the named object alone")
    parser.add_argument("--fade", type=int, default=1500, help="ramp: steps over which the rest fades in")
    parser.add_argument("--theta", type=float, default=1.5, help="the text model's rope_theta")
    parser.add_argument("--workers", type=int, default=1, help="runs in parallel, one thread each")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    runs = list(itertools.product(args.tasks, args.curricula))
    if args.workers > 1:
        with multiprocessing.get_context("spawn").Pool(args.workers, load_views, (args, 1)) as pool:
            results = pool.starmap(run, [(args, *r) for r in runs])
    else:
        load_views(args)
        results = [run(args, *r) for r in runs]
    result = {"machine": describe(), "steps": args.steps, "batch": BATCH, "learning_rate": LR, "rope_theta": args.theta,
              "plain": args.plain, "fade": args.fade, "seed": args.seed,
              "runs": {f"{t} · {c}": r for (t, c), r in zip(runs, results)}}
    write_results(args.out, "grounding_probe", result, report(result))
    plot(result, args.out / "grounding_probe.png")
    return result


def report(r: dict) -> str:
    rows = []
    for run in r["runs"].values():
        b, mae = run["baselines"], run["evals"][-1][1]
        rows.append(f"| {run['task']} | {run['curriculum']} | {run['train_views']} | {run['heldout_questions']} | "
                    f"{mae:.1f} | {min(m for _, m in run['evals']):.1f} | {b['best_constant']:.1f} | "
                    f"{b['sees_the_image_not_the_name']:.1f} | {run['seconds'] / 60:.0f} |")
    return "\n".join([
        "# Grounding probe: can the embedded architecture find a named object in a room?", "",
        markdown(r["machine"]), "",
        f"Per task and curriculum, a random model of the embedded model's shape with `rope_theta` "
        f"{r['rope_theta']:g}, trained {r['steps']} steps (batch {r['batch']}, AdamW lr {r['learning_rate']:g}, seed "
        f"{r['seed']}) on rig views of training rooms at {SIZE[0]}×{SIZE[1]}: \"Where is the {{name}}?\" → its box "
        "centre x. Curricula fade everything but the named object toward plain grey: *none* shows the real views "
        f"throughout; *ramp* shows the object alone for {r['plain']} steps, then fades the rest in over {r['fade']}; "
        "*mix* draws each example's contrast uniformly from 0 (alone) to 1 (real) all along. Held-out: real views "
        "of other rooms; mean absolute error (px) of the greedily read x (each digit after the true ones before "
        "it), beside the best constant and the best a model can do that sees the image but not the name (the "
        "median of the view's objects; for one name it would be 0).", "",
        "| task | curriculum | training views | held-out questions | MAE at the end | best MAE | best constant | "
        "sees the image, not the name | minutes |", "|---|---|---|---|---|---|---|---|---|", *rows, "",
        "Below the constant, the model reads positions from the image; below the name-blind column, it also "
        "finds the object the question names. Runs go in parallel, one thread each, so *minutes* are per run.", "",
        "![learning curves](grounding_probe.png)", ""])


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.8))
    colours, styles = {}, dict(zip(CURRICULA, (":", "-", "--")))
    for label, run in r["runs"].items():
        steps, mae = zip(*run["evals"])
        line, = ax.plot(steps, mae, marker="o", markersize=3, linestyle=styles[run["curriculum"]], label=label,
                        color=colours.get(run["task"]))
        if run["task"] not in colours:
            colours[run["task"]] = line.get_color()
            ax.axhline(run["baselines"]["best_constant"], color=line.get_color(), linewidth=0.8, alpha=0.6,
                       label=f"{run['task']}: best constant")
    ax.set_xlabel("step")
    ax.set_ylabel("held-out MAE of x (px)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
