"""The LangChain retriever over the service returns what the in-process retriever returns."""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core")

from bertino_rag.serve.app import create_app  # noqa: E402
from bertino_rag.serve.langchain import BertinoServiceRetriever  # noqa: E402

from .conftest import serving  # noqa: E402


def _view(docs):
    return [(d.id, d.page_content, round(d.metadata["score"], 5), d.metadata["title"])
            for d in docs]


async def test_service_retriever_matches_the_local_one(make_retriever, docs, squad_slice):
    retriever = make_retriever()
    retriever.index(docs)
    local = retriever.as_langchain(k=3)
    questions = squad_slice["queries"][:3]
    with serving(create_app(retriever, close_retriever=False)) as url:
        remote = BertinoServiceRetriever(url=url, k=3)
        assert _view(remote.invoke(questions[0])) == _view(local.invoke(questions[0]))
        assert [_view(d) for d in remote.batch(questions)] == [
            _view(d) for d in local.batch(questions)
        ]
        got = await remote.ainvoke(questions[1], k=2, filter={"para": {"$lte": 3}})
        assert _view(got) == _view(local.invoke(questions[1], k=2, filter={"para": {"$lte": 3}}))
        assert all(d.metadata["para"] <= 3 and d.metadata["id"] == d.id for d in got)
        with pytest.raises(TypeError, match="unknown search arguments"):
            remote.invoke(questions[0], top_k=2)
    retriever.close()
