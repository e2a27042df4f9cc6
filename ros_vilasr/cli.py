"""Command line entry point: `python -m ros_vilasr.cli <command> ...`.

Add a command by writing `_add_<name>(subparsers)` that registers a subparser whose `func`
default runs it, and listing it in COMMANDS.
"""

from __future__ import annotations

import argparse
import logging
from functools import partial
from pathlib import Path


def _tiny_model(args: argparse.Namespace) -> Path:
    from ros_vilasr.core.tiny_model import build_tiny_model

    return build_tiny_model(args.out, seed=args.seed)


def _add_tiny_model(subparsers) -> None:
    p = subparsers.add_parser("tiny-model", help="write a tiny random Qwen2.5-VL checkpoint for tests")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_tiny_model)


def _profiled(args: argparse.Namespace, key: str, fallback):
    """A flag's value: given, else the model's run profile (``vilasr_model.json``), else ``fallback``."""
    from ros_vilasr.core.models import run_profile

    given = getattr(args, key)
    if given is not None:
        return given
    return run_profile(args.model).get(key, fallback) if args.engine in ("transformers", "vllm") else fallback


def _engine_options(args: argparse.Namespace) -> dict:
    """Engine keyword options from the shared flags, only those the chosen engine takes."""
    if args.engine == "replay":
        return {}
    options = {"temperature": _profiled(args, "temperature", 0.75), "top_p": args.top_p}
    if args.engine == "transformers":
        options |= {"device": args.device, "dtype": args.dtype, "quantization": args.quantization}
    if args.engine == "openai":
        options["base_url"] = args.base_url
    return options


def add_engine_flags(p) -> None:
    from ros_vilasr.core.engines import ENGINES
    from ros_vilasr.core.images import MAX_PIXELS_EVAL

    p.add_argument("--model", default="embedded", help="checkpoint dir / hub id / embedded (the shipped model, "
                   "default); server model name (openai); transcript (replay)")
    p.add_argument("--engine", choices=ENGINES, default="transformers")
    p.add_argument("--device", default="auto", help="transformers engine: cpu, cuda, cuda:1, auto")
    p.add_argument("--dtype", default="auto", help="transformers engine: auto, bfloat16, float32 ...")
    p.add_argument("--quantization", choices=["none", "int8", "int4"], default="none",
                   help="transformers engine: weight-only quantization of the language model")
    p.add_argument("--temperature", type=float, help="0 = greedy (default: the model's profile, else 0.75)")
    p.add_argument("--max-pixels", type=int, help="pixel budget per image (default: the model's profile, "
                   f"else {MAX_PIXELS_EVAL})")
    p.add_argument("--max-new-tokens", type=int, help="tokens per model turn (default: the model's profile, "
                   "else the spec's budget)")
    p.add_argument("--image-position", choices=["first", "last"], help="where the first turn puts the images: "
                   "before the question (the protocol) or after it (default: the model's profile, else first)")
    p.add_argument("--system-prompt-file", type=Path, help="a replacement system prompt, {width} and {height} "
                   "filled in (default: the model's own, else the protocol's)")
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--base-url", default="http://localhost:8000/v1", help="openai engine: server URL")


def _ask(args: argparse.Namespace) -> None:
    from PIL import Image

    from ros_vilasr.core import report
    from ros_vilasr.core.driver import run_sessions
    from ros_vilasr.core.engines import create_engine
    from ros_vilasr.core.images import MAX_PIXELS_EVAL
    from ros_vilasr.core.session import Budget, Session

    images = [Image.open(p) for p in args.image]
    kind = args.kind or ("single" if len(images) == 1 else "views")
    budget = Budget(max_calls=args.max_calls, max_new_tokens=_profiled(args, "max_new_tokens", Budget.max_new_tokens))
    session = Session(images, args.question, options=args.option, problem_type=args.problem_type,
                      kind=kind, budget=budget, max_pixels=_profiled(args, "max_pixels", MAX_PIXELS_EVAL),
                      image_position=_profiled(args, "image_position", "first"),
                      system_prompt_path=_profiled(args, "system_prompt_file", None))
    engine = create_engine(args.engine, args.model, **_engine_options(args))
    try:
        run_sessions([session], engine, on_step=lambda s, step: print(report.format_step(step), flush=True))
    finally:
        engine.close()
    print(report.format_result(session))
    if args.out:
        logging.getLogger("vilasr").info("drawn images and trace in %s", session.save(args.out))


def _add_ask(subparsers) -> None:
    p = subparsers.add_parser("ask", help="answer a spatial question about images by drawing")
    p.add_argument("question")
    p.add_argument("--image", action="append", required=True, type=Path, help="repeat for several images")
    p.add_argument("--option", action="append", default=[], help='multiple-choice option, e.g. "A. left"')
    p.add_argument("--problem-type", default="", choices=["", "multiple choice", "numerical", "regression",
                                                          "free-form"])
    p.add_argument("--kind", choices=["single", "video", "views"], help="default: views for several images")
    p.add_argument("--max-calls", type=int, default=10)
    p.add_argument("--out", type=Path, help="write the drawn images and trace.json here")
    add_engine_flags(p)
    p.set_defaults(func=_ask)


def _replay(args: argparse.Namespace) -> Path:
    from PIL import Image

    from ros_vilasr.core.driver import run_sessions
    from ros_vilasr.core.engines.replay import ReplayEngine, read_transcripts
    from ros_vilasr.core.session import Budget, Session

    transcript = read_transcripts(args.transcript)[args.record]
    question = transcript.get("question") or ""
    images = [Image.open(p) for p in args.image]
    turns = sum(m.get("role", m.get("from")) in ("assistant", "gpt") for m in transcript["conversations"])
    session = Session(images, question, kind="single" if len(images) == 1 else "views",
                      budget=Budget(max_calls=max(turns, 1), max_images=10_000), max_pixels=args.max_pixels)
    run_sessions([session], ReplayEngine([transcript]))
    logging.getLogger("vilasr").info("replayed %d turns: finish %s", session.calls, session.finish_reason)
    return session.save(args.out)


def _add_replay(subparsers) -> None:
    from ros_vilasr.core.images import MAX_PIXELS_EVAL

    p = subparsers.add_parser("replay", help="re-render a recorded dialogue's drawings")
    p.add_argument("transcript", type=Path, help="JSON object or JSON-lines file with 'conversations'")
    p.add_argument("--image", action="append", required=True, type=Path, help="the dialogue's input images")
    p.add_argument("--record", type=int, default=0, help="which record of a multi-record file")
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS_EVAL)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_replay)


def _eval(args: argparse.Namespace) -> None:
    from ros_vilasr.core.engines import create_engine
    from ros_vilasr.core.images import MAX_PIXELS_EVAL
    from ros_vilasr.evaluation.benchmarks import load_benchmark
    from ros_vilasr.evaluation.runner import benchmark_name, run_evaluation

    name = benchmark_name(args.benchmark, args.name)
    items = load_benchmark(args.benchmark, args.images, benchmark=name)[:args.limit]
    engine = create_engine(args.engine, args.model, **_engine_options(args))
    try:
        run_evaluation(items, engine, args.out, name, batch_size=args.batch_size,
                       max_pixels=_profiled(args, "max_pixels", MAX_PIXELS_EVAL),
                       max_new_tokens=_profiled(args, "max_new_tokens", None),
                       image_position=_profiled(args, "image_position", "first"),
                       system_prompt_path=_profiled(args, "system_prompt_file", None))
    except KeyboardInterrupt:
        logging.getLogger("vilasr").warning("interrupted: finished items are saved in %s; run the same "
                                            "command again to resume", args.out)
        raise SystemExit(130) from None
    finally:
        engine.close()


def _add_eval(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate a model on a benchmark file (resumable)")
    p.add_argument("--benchmark", type=Path, required=True, help="evaluation file (ViLaSR-eval JSON list)")
    p.add_argument("--images", type=Path, help="folder the items' image paths are relative to "
                                              "(default: the file's folder)")
    p.add_argument("--name", help="benchmark name for scoring (default: from the file name)")
    p.add_argument("--out", type=Path, required=True, help="results.jsonl, summary.json and plots go here")
    p.add_argument("--batch-size", type=int, default=10, help="questions advanced together")
    p.add_argument("--limit", type=int, help="only the first N items")
    add_engine_flags(p)
    p.set_defaults(func=_eval)


def _score(args: argparse.Namespace) -> None:
    from ros_vilasr.core.aggregates import aggregate, format_table
    from ros_vilasr.evaluation.benchmarks import read_results_jsonl, score_rows
    from ros_vilasr.evaluation.runner import unique_rows

    rows = score_rows(unique_rows(read_results_jsonl(args.results)))
    print(format_table(aggregate(args.benchmark, rows)))


def _add_score(subparsers) -> None:
    p = subparsers.add_parser("score", help="score a results.jsonl (ours or the original ViLaSR's)")
    p.add_argument("results", type=Path)
    p.add_argument("--benchmark", required=True, help="maze, vsi_bench, spar_bench, ... (sets the aggregate)")
    p.set_defaults(func=_score)


def _synth(args: argparse.Namespace) -> None:
    from ros_vilasr.synth.trajectories import write_dataset

    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"{args.out} is not empty; choose a new directory")
    if not 0 <= args.reflective_share <= 1:
        raise SystemExit("--reflective-share must be between 0 and 1")
    if args.labels and args.task != "maze":
        raise SystemExit("--labels numbers the rows and columns of mazes; it applies to the maze task only")
    if args.task == "maze":
        from ros_vilasr.synth.maze import maze_tasks

        tasks = partial(maze_tasks, labels=args.labels)
    elif args.task == "rig":
        from ros_vilasr.synth.rig_tasks import rig_tasks as tasks
    elif args.task == "rig-metric":
        from ros_vilasr.synth.rig_metric import metric_tasks as tasks
    else:
        from ros_vilasr.synth.scene_tasks import scene_tasks as tasks
    write_dataset(tasks(args.n, args.seed, args.reflective_share), args.out, total=args.n,
                  image_position=args.image_position, system_prompt_path=args.system_prompt_file)


def _add_synth(subparsers) -> None:
    p = subparsers.add_parser("synth", help="synthetic spatial tasks: evaluation items + oracle trajectories")
    p.add_argument("task", choices=["maze", "scene", "rig", "rig-metric"],
                   help="rig: the demo's questions in random rooms; rig-metric: distances, room size, routes and "
                        "cross-view questions in those rooms")
    p.add_argument("--n", type=int, required=True, help="number of items")
    p.add_argument("--seed", type=int, default=0, help="same seed, byte-identical output")
    p.add_argument("--out", type=Path, required=True, help="an empty or new directory")
    p.add_argument("--reflective-share", type=float, default=0.25,
                   help="share of trajectories with a wrong drawing that is corrected later (maze, scene)")
    p.add_argument("--image-position", choices=["first", "last"], default="first",
                   help="the trajectories' prompt layout: that of the model they will train (its profile's "
                        "image_position; ViLaSR and Qwen2.5-VL: first)")
    p.add_argument("--system-prompt-file", type=Path, help="the trajectories' system prompt: that of the model "
                   "they will train (its system_prompt.txt; default: the protocol's)")
    p.add_argument("--labels", action="store_true", help="maze: number the rows and columns on the image")
    p.set_defaults(func=_synth)


COMMANDS = [_add_tiny_model, _add_ask, _add_replay, _add_eval, _add_score, _add_synth]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ros_vilasr")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an input error")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(subparsers)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    from ros_vilasr.core.models import ModelFilesError

    try:
        result = args.func(args)
    except (ModelFilesError, OSError, ValueError) as exc:  # bad input: one line (the traceback with --debug)
        if args.debug:
            raise
        parser.exit(2, f"vilasr: error: {exc}\n")
    if result is not None:
        print(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
