"""``vilasr-train <stage> --config FILE [flags] [--set key=value ...]`` (stages, and ``generate``:
cold-start data from a teacher), and
``vilasr-train recipe NAME --out DIR`` (a whole model from nothing: data, stages, evaluation).

A stage is a module defining ``Config`` (a ``config.StageConfig``) and ``train(config)``; add one
by listing it in STAGES. A stage's module (TRL, torch...) is imported only when that stage runs.
"""

from __future__ import annotations

import argparse
import importlib
import logging

from .config import InputError, check_inputs, load_config, parse_assignment, shipped_configs

# (subcommand, module, help)
STAGES = [
    ("sft", "vilasr_train.sft", "supervised fine-tuning on drawing trajectories (stages 1 and 2)"),
    ("grpo", "vilasr_train.grpo", "GRPO with drawing inside the rollouts (stage 3)"),
    ("reflect", "vilasr_train.reflect", "reflective rejection sampling, then SFT on the kept trajectories (stage 2)"),
    ("generate", "vilasr_train.generate", "cold-start data: a teacher behind an OpenAI-compatible endpoint "
                                          "reasons by drawing; the trajectories that pass every filter"),
]

# first-class flags: (flag, config key, argparse options)
FLAGS = [
    ("--data", "data", {"action": "append", "metavar": "FILE", "help": "trajectory file (repeatable)"}),
    ("--prompts", "data", {"action": "append", "metavar": "FILE", "help": "RL prompts (grpo, reflect; repeatable)"}),
    ("--images-root", "images_root", {"metavar": "DIR", "help": "where relative image paths resolve"}),
    ("--model", "model", {"help": "base checkpoint directory or hub id"}),
    ("--out", "out", {"metavar": "DIR", "help": "output directory"}),
    ("--deepspeed", "deepspeed", {"metavar": "zero2|zero3|FILE", "help": "DeepSpeed config"}),
    ("--k", "k", {"type": int, "help": "trajectories sampled per question (reflect)"}),
    ("--shard", "shard", {"metavar": "I/N", "help": "sample the prompts i with i %% N == I (reflect)"}),
    ("--sft", "sft", {"action": "store_const", "const": True, "help": "fine-tune on the kept data (reflect)"}),
    ("--base-url", "base_url", {"metavar": "URL", "help": "the teacher's OpenAI-compatible endpoint (generate)"}),
    ("--samples", "k", {"type": int, "metavar": "K", "help": "trajectories per question (generate)"}),
    ("--min-rounds", "min_rounds", {"type": int, "metavar": "R", "help": "least model turns kept (generate)"}),
    ("--concurrency", "concurrency", {"type": int, "metavar": "C", "help": "requests in flight (generate)"}),
    ("--resume", "resume", {"action": "store_const", "const": True,
                            "help": "continue from the latest checkpoint in --out"}),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vilasr-train", description="ViLaSR training stages")
    subparsers = parser.add_subparsers(dest="stage", required=True)
    for name, module, help_text in STAGES:
        p = subparsers.add_parser(name, help=help_text)
        p.set_defaults(module=module)
        p.add_argument("--config", help=f"YAML file or shipped config ({', '.join(shipped_configs())})")
        for flag, key, options in FLAGS:
            p.add_argument(flag, dest=key, **options)
        p.add_argument("--set", dest="assignments", action="append", default=[], type=parse_assignment,
                       metavar="KEY=VALUE", help="override any config key (repeatable)")
        p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
        p.add_argument("--debug", action="store_true", help="show the traceback of an input error")
    p = subparsers.add_parser("recipe", help="a model from nothing: synthetic data, the three stages, evaluation "
                                             "after each (resumable: run the same command again)")
    p.add_argument("recipe", metavar="NAME", help="recipe YAML file or shipped recipe (recipe_embedded)")
    p.add_argument("--out", required=True, help="output directory (the final model goes to OUT/model)")
    p.add_argument("--until", metavar="STEP", help="stop after this step (data, init, stage1, eval_stage1, ...)")
    p.add_argument("--ship", action="store_true",
                   help="then install OUT/model as the package's embedded model (ros_vilasr/models/embedded)")
    p.add_argument("--set", dest="assignments", action="append", default=[], type=parse_assignment,
                   metavar="KEY=VALUE", help="override a recipe key, dotted (e.g. stages.stage1.config=FILE)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--debug", action="store_true", help="show the traceback of an input error")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ros_vilasr.core.models import ModelFilesError

    from .distributed import end_process_group

    try:
        run(args)
    except (InputError, ModelFilesError) as exc:  # bad input: one line (the traceback with --debug)
        if args.debug:
            raise
        parser.exit(2, f"vilasr-train: error: {exc}\n")
    finally:
        end_process_group()
    return 0


def run(args: argparse.Namespace) -> None:
    if args.stage == "recipe":
        from .recipe import run as run_recipe
        from .recipe import ship

        run_recipe(args.recipe, args.out, dict(args.assignments), until=args.until)
        if args.ship:
            ship(args.out)
        return
    overrides = dict(args.assignments)
    overrides |= {key: value for _, key, _ in FLAGS if (value := getattr(args, key)) is not None}
    stage = importlib.import_module(args.module)
    config = load_config(stage.Config, args.config, overrides)
    check_inputs(config)
    logging.getLogger(__name__).info("%s config: %s", args.stage, config)
    stage.train(config)


if __name__ == "__main__":
    raise SystemExit(main())
