"""LangChain with documents: grouping passed through, LangChain's own splitters on the way in."""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core")
splitters = pytest.importorskip("langchain_text_splitters")

from langchain_core.documents import Document  # noqa: E402

from bertino_rag import Retriever  # noqa: E402
from bertino_rag.integrations.langchain import (  # noqa: E402
    BertinoEmbeddings,
    BertinoRetriever,
    BertinoVectorStore,
)

from .shared import italian_paragraphs, minilm_encoder  # noqa: E402

QUESTION = "Quale nome è usato anche per descrivere la foresta pluviale amazzonica in inglese?"


def articles(per_article: int = 3) -> list[dict]:
    """Each squad-it-dev article of the shared slice as one document (its first paragraphs)."""
    out: dict[str, list[str]] = {}
    for p in italian_paragraphs(per_article):
        out.setdefault(p["metadata"]["source"], []).append(p["text"])
    return [{"id": title, "text": "\n\n".join(texts), "metadata": {"source": title}}
            for title, texts in out.items()]


def test_retriever_groups_chunks_by_document():
    core = Retriever(dim=128, encoder=minilm_encoder(), collection="lc_docs")
    core.index(articles())
    assert core.last_index_report.n_chunked == 3
    lc = BertinoRetriever(retriever=core, k=2, group_by="document")
    docs = lc.invoke(QUESTION)
    assert [d.id for d in docs][0] == "Amazzonia" and len({d.id for d in docs}) == 2
    top = docs[0]
    assert top.metadata["doc_id"] == "Amazzonia" and 1 <= len(top.metadata["chunk_ids"]) <= 3
    assert all(i.startswith("Amazzonia#") for i in top.metadata["chunk_ids"])
    flat = core.as_langchain(k=2).invoke(QUESTION)
    assert all("#" in d.id for d in flat)  # chunk ids without grouping
    wide = BertinoRetriever(retriever=core, k=1, expand=1).invoke(QUESTION)[0]
    assert len(wide.page_content) > len(flat[0].page_content)
    assert flat[0].page_content in wide.page_content
    assert [d.id for d in lc.invoke(QUESTION, k=3)] == [
        h.id for h in core.search(QUESTION, k=3, group_by="document")]


def test_langchain_splitters_feed_the_vector_store_and_grouping_follows_their_metadata():
    splitter = splitters.RecursiveCharacterTextSplitter(chunk_size=400, chunk_overlap=40,
                                                        add_start_index=True)
    parents = [Document(page_content=a["text"], metadata={"doc_id": a["id"]})
               for a in articles(2)]
    pieces = splitter.split_documents(parents)
    assert len(pieces) > len(parents)
    vs = BertinoVectorStore(BertinoEmbeddings(encoder=minilm_encoder(), dim=128))
    ids = vs.add_documents(pieces)
    assert len(ids) == len(pieces) and vs.store.count() == len(pieces)  # stored as given
    flat = vs.similarity_search(QUESTION, k=len(pieces))
    grouped = vs.similarity_search_with_score(QUESTION, k=3, group_by="document")
    assert [d.id for d, _ in grouped] == list(dict.fromkeys(
        d.metadata["doc_id"] for d in flat))[:3]
    best, score = grouped[0]
    assert best.id == "Amazzonia" and best.metadata["chunk_ids"][0] == flat[0].id
    assert score == pytest.approx(vs.similarity_search_with_score(QUESTION, k=1)[0][1])
