"""``bertino-rag train`` / ``python -m bertino_rag.training``: every TrainConfig field is a flag."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import typing
from collections.abc import Sequence

from ..training.config import TrainConfig, _base_type, _field_types

__all__ = ["add_arguments", "main", "register_cli"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` plus one flag per :class:`TrainConfig` field (``--base-model`` ...)."""
    parser.add_argument("--config", default=None, help="TOML, YAML or JSON file of options; "
                        "flags given here override it")
    parser.add_argument("--quiet", action="store_true", help="log warnings only")
    hints = _field_types()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        tp, _ = _base_type(hints[f.name])
        default: object = None
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        help_text = f"(default: {default})"
        if tp is bool:
            parser.add_argument(flag, dest=f.name, default=None,
                                action=argparse.BooleanOptionalAction, help=help_text)
        elif typing.get_origin(tp) is list:
            parser.add_argument(flag, dest=f.name, default=None, nargs="+", metavar="V",
                                help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, default=None, metavar="V", help=help_text)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    from ..training.config import load_config

    overrides = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(TrainConfig)}
    return load_config(args.config, **overrides)


def _cmd_train(args: argparse.Namespace) -> int:
    from ..training.evaluate import format_table
    from ..training.train import train

    config = config_from_args(args)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if config.task == "rerank":
        return _cmd_train_reranker(config)
    out = train(config)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    print(format_table(metrics["after"], metrics.get("before")))
    t = metrics["training"]
    print(f"saved {out} ({t['steps']} steps, {t['wall_seconds']}s); serve it with "
          f"Retriever(model={str(out)!r}, dim={metrics['best_dim']})")
    return 0


def _cmd_train_reranker(config: TrainConfig) -> int:
    from ..training.rerank import train_reranker

    out = train_reranker(config)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    print("dev articles:")
    print(metrics["after"]["table"])
    if metrics.get("test"):
        print("test articles:")
        print(metrics["test"]["table"])
    t = metrics["training"]
    print(f"saved {out} ({t['steps']} steps, {t['train_seconds']}s training, "
          f"{t['wall_seconds']}s in all); serve it with Retriever(..., reranker={str(out)!r}) "
          f"or --reranker {out}")
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand to the ``bertino-rag`` command line."""
    p = subparsers.add_parser(
        "train", help="fine-tune a Matryoshka encoder, or a reranker with --task rerank "
        "(needs the train extra)"
    )
    add_arguments(p)
    p.set_defaults(func=_cmd_train)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bertino_rag.training",
                                     description="Fine-tune a Matryoshka encoder.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return _cmd_train(args)
    except (ValueError, OSError, ImportError) as err:
        print(f"bertino-rag train: error: {err}", file=sys.stderr)
        return 2
