"""Index wall time vs encode-only time, per store, against the plain way (encode, then write).

Usage:
    python benchmarks/bench_index.py [--n 256] [--rounds 3] [--stores memory,qdrant,milvus]
        [--backend onnx --quantize int8]

Per store and round, interleaved:
- ``encode-only``: ``Encoder.encode`` of all texts in one call (sentence-transformers sorts the
  whole call by length: the best case for the encoder alone);
- ``bertino-index``: ``Retriever.index`` (pipelined writes, full vectors kept for rescoring);
- ``plain``: the same SentenceTransformer's ``encode`` of all texts, then the store's own client
  (numpy array / ``QdrantClient.upsert`` / ``MilvusClient.insert``), one after the other, index
  vectors only.
Collections are dropped and created again before each run, outside the timed part.
Target: ``bertino-index`` <= 1.05 x ``encode-only``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
from _indexing_common import (
    add_encoder_args,
    encoder_from,
    interleave,
    machine,
    median,
    squad_paragraphs,
)


def plain_writer(kind: str, where: Path, dim: int):
    """The store's own client, used directly: returns ``(reset, write)``: ``reset()`` (re)creates
    the collection, ``write(ids, texts, vectors)`` writes."""
    if kind == "memory":
        held: list = []
        return held.clear, lambda ids, texts, vec: held.append((ids, texts, np.array(vec)))
    if kind == "qdrant":
        from qdrant_client import QdrantClient, models

        client = QdrantClient(path=str(where / "plain-qdrant"))

        def reset():
            if client.collection_exists("plain"):
                client.delete_collection("plain")
            client.create_collection("plain", vectors_config=models.VectorParams(
                size=dim, distance=models.Distance.COSINE))

        def write(ids, texts, vec):
            for s in range(0, len(ids), 256):
                client.upsert("plain", points=[
                    models.PointStruct(id=s + i, vector=v.tolist(), payload={"id": d, "text": t})
                    for i, (d, t, v) in enumerate(zip(ids[s:s + 256], texts[s:s + 256],
                                                      vec[s:s + 256], strict=True))])
        return reset, write
    if kind == "milvus":
        from pymilvus import MilvusClient

        client = MilvusClient(str(where / "plain-milvus.db"))

        def reset():
            if client.has_collection("plain"):
                client.drop_collection("plain")
            client.create_collection("plain", dimension=dim, primary_field_name="pk",
                                     id_type="string", max_length=64, metric_type="COSINE")

        def write(ids, texts, vec):
            for s in range(0, len(ids), 256):
                client.insert("plain", [{"pk": d, "vector": v.tolist(), "text": t}
                                        for d, t, v in zip(ids[s:s + 256], texts[s:s + 256],
                                                           vec[s:s + 256], strict=True)])
        return reset, write
    raise ValueError(kind)


def store_spec(kind: str, where: Path) -> str:
    return {"memory": "memory", "qdrant": f"qdrant:{where / 'bertino-qdrant'}",
            "qdrant-edge": f"qdrant-edge:{where / 'bertino-edge'}",
            "milvus": f"milvus:{where / 'bertino-milvus.db'}"}[kind]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--stores", default="memory,qdrant,milvus")
    add_encoder_args(ap)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--write-batch", type=int, default=32,
                    help="documents per store write (several writes per run: overlap shows)")
    args = ap.parse_args()
    from bertino_rag import Retriever, TruncationWarning

    warnings.simplefilter("ignore", TruncationWarning)
    print(json.dumps({"machine": machine(), "args": vars(args)}), flush=True)
    enc = encoder_from(args, args.dim)
    docs = squad_paragraphs(args.n)
    texts, ids = [d["text"] for d in docs], [d["id"] for d in docs]
    enc.encode(texts[:32], warn_truncation=False)  # warm-up
    tmp = Path(tempfile.mkdtemp(prefix="bench-index-"))
    try:
        for kind in args.stores.split(","):
            retriever = Retriever(dim=args.dim, encoder=enc, store=store_spec(kind, tmp),
                                  collection="bench", recreate=True,
                                  chunking=False)  # whole paragraphs, as encode-only
            # Edge has no plain client here: its plain row is left out
            reset, plain = (plain_writer(kind, tmp, args.dim) if kind != "qdrant-edge"
                            else (None, None))
            reports = []

            def recreate(retriever=retriever):
                retriever.store.open("bench", retriever.stamp, recreate=True)

            def index(retriever=retriever, reports=reports):
                retriever.index(docs, show_progress_bar=False, batch_size=args.write_batch)
                reports.append(retriever.last_index_report)

            def plain_way(plain=plain):
                vec = enc.model.encode(texts, batch_size=enc.batch_size, convert_to_numpy=True)
                plain(ids, texts, vec[:, : args.dim])

            # collections are (re)created before each run, untimed: a one-off cost that a
            # few hundred documents would otherwise overstate
            variants: dict = {
                "encode-only": lambda: enc.encode(texts, warn_truncation=False,
                                                  show_progress_bar=False),
                "bertino-index": (recreate, index),
            }
            if plain is not None:
                variants["plain"] = (reset, plain_way)
            secs = interleave(variants, args.rounds)
            assert retriever.count() == len(set(ids))
            enc_s = median(secs["encode-only"])
            print(json.dumps({
                "bench": "index", "store": kind, "n": args.n,
                "encode_only_s": round(enc_s, 3),
                "index_s": round(median(secs["bertino-index"]), 3),
                **({"plain_s": round(median(secs["plain"]), 3),
                    "plain_over_encode": round(median(secs["plain"]) / enc_s, 3)}
                   if "plain" in secs else {}),
                "index_over_encode": round(median(secs["bertino-index"]) / enc_s, 3),
                "write_s_in_writer": [round(r.write_seconds, 3) for r in reports],
                "unhidden_wait_s": [round(r.wait_seconds, 3) for r in reports],
                # within one run: (encoding + the writing not hidden behind it) / encoding
                "in_run_overhead": [round((r.encode_seconds + r.wait_seconds) / r.encode_seconds,
                                          3) for r in reports],
                "runs": {k: [round(x, 3) for x in v] for k, v in secs.items()},
            }), flush=True)
            retriever.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
