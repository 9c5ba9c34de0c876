"""``bertino-rag eval``: quality per Matryoshka dim, what rescoring buys, what layouts cost."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..stores.registry import spec_help
from .common import (
    add_encoder_arguments,
    add_reranker_arguments,
    deprecated_alias,
    encoder_options,
    positive_int,
    reranker_options,
)

__all__ = ["register_cli"]


def _int_list(text: str) -> list[int]:
    if text.strip().lower() in ("", "none", "0"):
        return []
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"values must be positive, got {text!r}")
    return values


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``eval`` subcommand to the ``bertino-rag`` parser."""
    p = subparsers.add_parser(
        "eval", help="retrieval/STS quality per dim, two-stage funnels, bytes and latency",
        description="Evaluate a model on a BEIR folder (corpus.jsonl, queries.jsonl, "
                    "qrels/<split>.tsv) and/or an STS csv (sentence1,sentence2,score): metrics "
                    "per Matryoshka dim, the two-stage funnel, bytes per document and latency.",
    )
    p.add_argument("path", nargs="?", default=None,
                   help="a BEIR folder, or an STS .csv file")
    add_encoder_arguments(p)
    p.add_argument("--sts", default=None, help="an STS csv (sentence1,sentence2,score)")
    p.add_argument("--dims", type=_int_list, default=None,
                   help="comma-separated dims (default: the model's Matryoshka dims)")
    p.add_argument("--rescore-k", "--rerank-k", dest="rescore_k", type=_int_list,
                   action=deprecated_alias("--rerank-k"), default=[100],
                   help="candidates rescored by the two-stage funnel, comma-separated "
                        "(default: 100; 'none' for no funnel)")
    p.add_argument("--funnel-dims", type=_int_list, default=None,
                   help="index dims of the funnels (default: every --dims value below full)")
    p.add_argument("--store", default="memory",
                   help=f"store for the funnels and latencies: {spec_help()} (temporary "
                        "collections, dropped afterwards)")
    p.add_argument("--split", default="test", help="qrels split (default: test)")
    p.add_argument("--with-title", action="store_true",
                   help="encode 'title\\ntext' for a document (default: its text alone)")
    p.add_argument("--max-docs", type=positive_int, default=None,
                   help="slice: at most this many documents (every relevant document of the "
                        "kept queries stays)")
    p.add_argument("--max-queries", type=positive_int, default=None,
                   help="slice: at most this many queries")
    p.add_argument("--max-pairs", type=positive_int, default=None, help="STS: first N pairs")
    p.add_argument("--seed", type=int, default=0, help="seed of the slice (default: 0)")
    p.add_argument("--latency-queries", type=int, default=100,
                   help="queries timed one by one per configuration (0: no timing)")
    p.add_argument("--json", dest="json_out", default=None, metavar="FILE",
                   help="write the report as JSON")
    p.add_argument("--plot", default=None, metavar="FILE.png",
                   help="write a PNG of NDCG@10 against bytes per document")
    p.add_argument("--markdown", default=None, metavar="FILE.md",
                   help="also write the Markdown report to a file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--modes", default=None, metavar="dense,lexical,hybrid",
                   help="also report each search mode per dim (--dims, default: 128 and "
                        "full) on a hybrid collection")
    p.add_argument("--tune-fusion", default=None, metavar="FILE.json",
                   help="pick the hybrid fusion (min-max weight, RRF k and weight) with the "
                        "best NDCG@10 on these qrels at the first --dims value, print it and "
                        "write it to FILE (Retriever(fusion=FILE), search --fusion FILE)")
    p.add_argument("--fusion", default=None,
                   help="fusion of the hybrid mode in --modes ('minmax', 'rrf' or a file)")
    add_reranker_arguments(p)
    p.add_argument("--documents", action="store_true",
                   help="the corpus holds long documents and the qrels name them: index them "
                        "as users do (chunked), search with group_by='document' and report "
                        "document-level metrics, against the documents indexed whole, per dim "
                        "(--dims, default: 128 and full)")
    p.add_argument("--max-tokens", type=positive_int, default=None,
                   help="--documents: tokens per chunk (default: what the model reads)")
    p.add_argument("--overlap", type=int, default=0,
                   help="--documents: tokens of trailing sentences repeated in the next chunk")
    p.set_defaults(func=_cmd_eval)


def _check_before_loading(args: argparse.Namespace) -> None:
    """What can fail without the model fails here, before it loads and the evaluation runs:
    a missing extra (matplotlib for --plot, the store's client), an output file whose folder
    does not exist."""
    from .._deps import require

    if args.plot:
        require("matplotlib", "eval")
    kind = args.store.split(":", 1)[0].strip().lower()
    if kind == "qdrant":
        require("qdrant_client", "qdrant")
    elif kind == "milvus":
        require("pymilvus", "milvus")
    for flag, target in (("--plot", args.plot), ("--json", args.json_out),
                         ("--markdown", args.markdown), ("--tune-fusion", args.tune_fusion)):
        if target and not Path(target).resolve().parent.is_dir():
            raise ValueError(f"{flag} {target}: the folder {Path(target).resolve().parent} "
                             "does not exist; create it or write the file elsewhere")


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..encoder import make_encoder
    from ..evaluation.dataset import load_eval_set, load_sts_set
    from ..evaluation.report import to_markdown, write_json, write_plot
    from ..evaluation.runner import PrecomputedEncoder, encode_inputs, evaluate

    beir_path, sts_path = None, args.sts
    if args.path is not None:
        path = Path(args.path)
        if path.is_dir():
            beir_path = path
        elif path.is_file() and path.suffix.lower() in (".csv", ".tsv"):
            if sts_path is not None:
                raise ValueError("give the STS file once: as PATH or with --sts")
            sts_path = path
        elif not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        else:
            raise ValueError(f"{path}: expected a BEIR folder or an STS .csv file")
    if beir_path is None and sts_path is None:
        raise ValueError("nothing to evaluate: give a BEIR folder and/or --sts FILE.csv")
    if args.plot and beir_path is None:
        raise ValueError("--plot shows NDCG@10: it needs a BEIR folder")
    modes: list[str] = []
    if args.modes:
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        bad = [m for m in modes if m not in ("dense", "lexical", "hybrid")]
        if bad or not modes:
            raise ValueError(f"--modes takes dense,lexical,hybrid; got {args.modes!r}")
    if (modes or args.tune_fusion) and beir_path is None:
        raise ValueError("--modes and --tune-fusion need a BEIR folder with qrels")
    if args.documents:
        if beir_path is None:
            raise ValueError("--documents needs a BEIR folder whose qrels name its documents")
        clash = [flag for flag, on in (("--sts", sts_path), ("--plot", args.plot),
                                        ("--modes", modes), ("--tune-fusion", args.tune_fusion))
                 if on]
        if clash:
            raise ValueError(f"--documents reports document-level retrieval only; run "
                             f"{', '.join(clash)} without it")
    elif args.max_tokens is not None or args.overlap:
        raise ValueError("--max-tokens and --overlap size the chunks of --documents")
    if args.reranker and (beir_path is None or args.documents):
        raise ValueError("--reranker adds rows to the search modes of a BEIR folder with qrels "
                         "(not to --documents)")
    _check_before_loading(args)
    reranking = reranker_options(args)  # a model that is no cross-encoder fails before encoding
    from ..search.fusion import Fusion

    fusion = Fusion.coerce(args.fusion) if args.fusion else None

    evalset = None
    if beir_path is not None:
        evalset = load_eval_set(beir_path, split=args.split, with_title=args.with_title,
                                max_docs=args.max_docs, max_queries=args.max_queries,
                                seed=args.seed)
    sts = load_sts_set(sts_path, max_pairs=args.max_pairs) if sts_path else None
    for note in (evalset.notes if evalset else []) + (sts.notes if sts else []):
        print(f"note: {note}", file=sys.stderr)
    encoder = make_encoder(**encoder_options(args))
    if args.documents:
        return _documents(args, encoder, evalset)
    # every text encoded once, here: the main report, the modes and the tuning read it
    _phase(args, "encoding " + ", ".join(
        ([f"{len(evalset.doc_ids)} documents and {len(evalset.query_ids)} queries"]
         if evalset else []) + ([f"{len(sts.scores)} STS pairs"] if sts else [])))
    encoded = encode_inputs(encoder, evalset, sts, show_progress_bar=not args.quiet)
    _phase(args, "dims, funnels and latency")
    report = evaluate(encoder, evalset, sts, dims=args.dims, rescore_k=args.rescore_k,
                      funnel_dims=args.funnel_dims, store=args.store,
                      latency_queries=max(0, args.latency_queries), encoded=encoded,
                      show_progress_bar=not args.quiet)
    text = to_markdown(report)
    extra: dict[str, Any] = {}
    if reranking and not modes:
        modes = ["dense", "lexical", "hybrid"]
    if modes or args.tune_fusion:
        assert evalset is not None  # checked above: they need a BEIR folder
        more, extra = _modes_and_tuning(
            args, PrecomputedEncoder.for_inputs(encoder, evalset, encoded), evalset, modes,
            fusion, reranking)
        text += more
    # one report, written once every part of it is measured
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")
    if args.json_out:
        write_json(report, args.json_out)
        if extra:
            data = json.loads(Path(args.json_out).read_text(encoding="utf-8"))
            Path(args.json_out).write_text(
                json.dumps({**data, **extra}, indent=2, ensure_ascii=False) + "\n",
                encoding="utf-8")
        print(f"wrote {args.json_out}", file=sys.stderr)
    if args.plot:
        write_plot(report, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def _phase(args: argparse.Namespace, what: str) -> None:
    """One line on stderr as each phase starts (the long ones also show progress bars)."""
    if not args.quiet:
        print(f"eval: {what}...", file=sys.stderr)


def _modes_and_tuning(args: argparse.Namespace, encoder: Any, evalset: Any,
                      modes: list[str], fusion: Any,
                      reranking: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The modes section and the fusion tuning: their Markdown and their JSON. ``encoder``
    answers the texts already encoded (no text is encoded again)."""
    from ..evaluation.modes import evaluate_modes, modes_markdown, tune_fusion

    full = encoder.full_dim
    dims = list(args.dims) if args.dims else sorted({min(128, full), full})
    text = ""
    data: dict[str, Any] = {}
    if modes:
        _phase(args, f"search modes {', '.join(modes)} at dims {', '.join(map(str, dims))}")
        results = evaluate_modes(encoder, evalset, dims, modes=modes, store=args.store,
                                 fusion=fusion, show_progress_bar=not args.quiet)
        text += "\n## Search modes\n\n" + modes_markdown(results) + "\n"
        data["modes"] = [{"mode": r.mode, "dim": r.dim, "label": r.label, **r.metrics,
                          "fusion": r.fusion.to_dict() if r.fusion else None}
                         for r in results]
    if reranking:
        from ..evaluation.rerank import evaluate_reranking_dims, rerank_markdown

        top = reranking["rerank_top"] or 20
        _phase(args, f"reranking the top {top} of {', '.join(modes)}")
        by_dim = evaluate_reranking_dims(encoder, evalset, dims, reranking["reranker"],
                                         modes=modes, tops=[top], store=args.store)
        for dim, rows in by_dim.items():
            text += (f"\n## Reranking at dim {dim} ({reranking['reranker']!r}, top {top}; "
                     f"ms/query: the whole search, in batches of {rows[0].batch_size})\n\n"
                     + rerank_markdown(rows) + "\n")
        data["reranking"] = {str(dim): [r.to_dict() for r in rows]
                             for dim, rows in by_dim.items()}
    if args.tune_fusion:
        _phase(args, f"tuning the hybrid fusion at dim {dims[0]}")
        best, ndcg, tried = tune_fusion(encoder, evalset, dims[0], store=args.store,
                                        show_progress_bar=not args.quiet)
        best.save(args.tune_fusion, **{"ndcg@10": round(ndcg, 4), "dim": dims[0]})
        text += (f"\nbest fusion at dim {dims[0]}: {best.method}, weight {best.weight:g}"
                 + (f", rrf_k {best.rrf_k}" if best.method == "rrf" else "")
                 + f" (NDCG@10 {ndcg:.4f}, {len(tried)} tried); wrote {args.tune_fusion}\n")
        data["fusion_tuning"] = {"dim": dims[0], "best": best.to_dict(), "ndcg@10": ndcg,
                                 "tried": [{**f.to_dict(), "ndcg@10": v} for f, v in tried]}
    return text, data


def _documents(args: argparse.Namespace, encoder: Any, evalset: Any) -> int:
    import json

    from ..evaluation.documents import documents_markdown, evaluate_documents

    full = encoder.full_dim
    dims = list(args.dims) if args.dims else sorted({min(128, full), full})
    chunking: Any = True
    if args.max_tokens is not None or args.overlap:
        chunking = {"overlap": args.overlap}
        if args.max_tokens is not None:
            chunking["max_tokens"] = args.max_tokens
    rescore_k = args.rescore_k[0] if args.rescore_k else 100
    results = evaluate_documents(encoder, evalset, dims, store=args.store, chunking=chunking,
                                 rescore_k=rescore_k, show_progress_bar=not args.quiet)
    chunked = next(r for r in results if r.name == "chunked")
    text = (f"## Document-level retrieval\n\n{evalset.source}: {len(evalset.doc_ids)} "
            f"documents, {len(evalset.query_ids)} queries; model {encoder.model_id}, reads "
            f"{encoder.max_seq_length} tokens. Chunked: {chunked.n_chunked} documents cut into "
            f"chunks ({chunked.n_stored} stored items); whole: one vector per document, "
            "embedded from its beginning. A document's score is its best chunk's.\n\n"
            + documents_markdown(results))
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n", encoding="utf-8")
    if args.json_out:
        payload = {"model": encoder.model_id, "source": evalset.source,
                   "documents": len(evalset.doc_ids), "queries": len(evalset.query_ids),
                   "results": [r.to_dict() for r in results]}
        Path(args.json_out).write_text(json.dumps(payload, indent=2, ensure_ascii=False),
                                       encoding="utf-8")
        print(f"wrote {args.json_out}", file=sys.stderr)
    return 0
