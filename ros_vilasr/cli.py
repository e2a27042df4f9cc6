"""Command line entry point: `python -m ros_vilasr.cli <command> ...`.

Add a command by writing `_add_<name>(subparsers)` that registers a subparser whose `func`
default runs it, and listing it in COMMANDS.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


def _tiny_model(args: argparse.Namespace) -> Path:
    from ros_vilasr.core.tiny_model import build_tiny_model

    return build_tiny_model(args.out, seed=args.seed)


def _add_tiny_model(subparsers) -> None:
    p = subparsers.add_parser("tiny-model", help="write a tiny random Qwen2.5-VL checkpoint for tests")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_tiny_model)


COMMANDS = [_add_tiny_model]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ros_vilasr")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(subparsers)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = args.func(args)
    if result is not None:
        print(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
