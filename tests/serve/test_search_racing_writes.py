"""Searches racing writes through the service never fail: hybrid, rescored searches in flight
while other clients delete and re-index the documents they find (candidates vanish between
retrieval and the reads of their full vectors and documents) all answer 200, on MemoryStore,
Qdrant local mode and Milvus Lite. Real Italian sentences, the session MiniLM."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from bertino_rag import MemoryStore, Retriever
from bertino_rag.serve.app import ServeSettings, create_app
from bertino_rag.serve.client import AsyncBertinoClient
from tests._texts import SENTENCES

from .conftest import serving

QUESTIONS = ["Quanti spettatori ospitava il Colosseo?", "Dove si trova la Gioconda?",
             "Qual è il fiume più lungo d'Italia?", "Per cosa è famosa Napoli?"]


def _store(kind: str, tmp_path):
    if kind == "memory":
        return MemoryStore(path=tmp_path / "m")
    if kind == "qdrant":
        if importlib.util.find_spec("qdrant_client") is None:
            pytest.skip("qdrant-client is not installed")
        from bertino_rag.stores import QdrantStore

        return QdrantStore()
    if importlib.util.find_spec("milvus_lite") is None:
        pytest.skip("milvus-lite is not installed")
    from bertino_rag.stores import MilvusStore

    return MilvusStore(uri=str(tmp_path / "race.db"))


def _docs(round_: int) -> list[dict]:
    return [{"id": f"s{i}", "text": f"{s} (revisione {round_})", "metadata": {"r": round_}}
            for i, s in enumerate(SENTENCES * 3)][:20]


@pytest.mark.parametrize("kind", ["memory", "qdrant", "milvus"])
async def test_searches_racing_deletes_and_edits_never_fail(encoder, tmp_path, kind):
    retriever = Retriever(dim=128, encoder=encoder, store=_store(kind, tmp_path), hybrid=True,
                          chunking=False)
    retriever.index(_docs(0))
    with serving(create_app(retriever, ServeSettings(batch_wait_ms=1, index_batch=4))) as url:
        async with AsyncBertinoClient(url, timeout=300) as client:
            async def searches() -> int:
                answered = 0
                for i in range(24):
                    hits = await client.search(QUESTIONS[i % 4], k=5, mode="hybrid",
                                               rescore_k=20)
                    assert len(hits) <= 5
                    answered += 1
                return answered

            async def writes() -> None:
                for round_ in range(1, 5):
                    await client.delete([f"s{i}" for i in range(0, 20, 2)])
                    await client.index(_docs(round_)[::2])
                    await client.delete([f"s{i}" for i in range(1, 20, 3)])

            answered = await asyncio.gather(searches(), searches(), searches(), writes())
    assert answered[:3] == [24, 24, 24]  # every search answered 200 (else ServiceError)
    retriever.close()
