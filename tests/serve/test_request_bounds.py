"""Strict request types and bounded queries (issue 28): no coercion of ids or options, a huge
query refused at once with the limit named, and never stalling the other clients."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from bertino_rag.serve.app import ServeSettings, create_app

from .conftest import serving

pytestmark = pytest.mark.filterwarnings("ignore:.*max_seq_length")


@pytest.fixture
def served(make_retriever, docs):
    def serve(settings=None):
        retriever = make_retriever()
        retriever.index(docs[:4] + [{"id": "1", "text": "Il documento uno resta com'era."}])
        return retriever, serving(create_app(retriever, settings))

    return serve


def test_request_fields_are_not_coerced(served):
    retriever, server = served()
    with server as url:
        # before: a JSON true id became "1" and overwrote document "1"
        r = httpx.post(f"{url}/documents", json={"documents": [{"id": True, "text": "Vero."}]})
        assert r.status_code == 422 and "documents" in r.text
        assert retriever.get(["1"])[0].text == "Il documento uno resta com'era."
        for body in ({"query": "Roma", "k": "5"}, {"query": "Roma", "k": 5.0},
                     {"query": "Roma", "rescore": "false"}, {"query": 7},
                     {"queries": ["Roma", 3]}, {"query": "Roma", "rescore_k": True}):
            r = httpx.post(f"{url}/search", json=body)
            assert r.status_code == 422, body
        r = httpx.post(f"{url}/documents", json={"documents": [{"id": "", "text": "Vuoto."}]})
        assert r.status_code == 422 and "empty id" in r.json()["detail"]
        r = httpx.request("DELETE", f"{url}/documents", json={"ids": [1]})
        assert r.status_code == 422
        # a lone surrogate (valid JSON, "\ud800"): the named error, not a 500
        r = httpx.post(f"{url}/search", content=b'{"query": "\\ud800 Roma"}',
                       headers={"content-type": "application/json"})
        assert r.status_code == 422 and "lone surrogate" in r.text
        r = httpx.post(f"{url}/search", json={"query": "\x00"})
        assert r.status_code == 422 and "empty text" in r.text
        r = httpx.post(f"{url}/v1/embeddings", content=b'{"input": ["Roma", "\\udfff"]}',
                       headers={"content-type": "application/json"})
        assert r.status_code == 400 and "input[1]: the text" in r.json()["detail"]
        assert "lone surrogate" in r.json()["detail"]
        # what strict types still take
        r = httpx.post(f"{url}/documents", json={"documents": [{"id": 7, "text": "Sette."}]})
        assert r.status_code == 200 and r.json()["ids"] == ["7"]
        r = httpx.post(f"{url}/search", json={"query": "Roma", "k": 2, "rescore": False})
        assert r.status_code == 200 and len(r.json()["hits"]) == 2
        assert retriever.count() == 6


def test_a_long_query_is_refused_naming_the_limit(served):
    _, server = served(ServeSettings(max_query_chars=200, max_query_tokens=16))
    with server as url:
        r = httpx.post(f"{url}/search", json={"query": "parola " * 100})
        assert r.status_code == 413
        assert "700 characters" in r.json()["detail"] and "at most 200" in r.json()["detail"]
        assert "--max-query-chars" in r.json()["detail"]
        r = httpx.post(f"{url}/search", json={"queries": ["Roma", "la città di Roma " * 6]})
        assert r.status_code == 413
        detail = r.json()["detail"]
        assert "queries[1] has" in detail and "at most 16 tokens" in detail
        assert "--max-query-tokens" in detail
        r = httpx.post(f"{url}/search", json={"query": "Dove si trova Roma?"})
        assert r.status_code == 200


def test_the_default_token_bound_is_the_model_window(served, encoder):
    _, server = served()
    window = encoder.max_seq_length
    with server as url:
        # counted in the event loop (a short request) and in a worker thread (a long one)
        for words in (window, 700):
            r = httpx.post(f"{url}/search", json={"query": "Roma " * words})
            assert r.status_code == 413 and f"at most {window} tokens" in r.json()["detail"]
        r = httpx.post(f"{url}/search", json={"queries": ["Dove si trova Roma?"] * 3})
        assert r.status_code == 200 and len(r.json()["results"]) == 3


def test_a_huge_query_does_not_stall_other_clients(served):
    """A query of 4 MB (under the body limit) is answered 413 at once, and a search sent at
    the same time is answered meanwhile (before: 320 s for both)."""
    _, server = served()
    with server as url:
        done: dict[str, float] = {}

        def huge():
            started = time.perf_counter()
            r = httpx.post(f"{url}/search", json={"query": "parola " * 600_000}, timeout=120)
            done["huge"] = time.perf_counter() - started
            done["status"] = r.status_code

        thread = threading.Thread(target=huge)
        thread.start()
        started = time.perf_counter()
        r = httpx.post(f"{url}/search", json={"query": "Dove si trova Roma?"}, timeout=120)
        small = time.perf_counter() - started
        thread.join(120)
        assert r.status_code == 200 and done["status"] == 413
        assert small < 10 and done["huge"] < 10


def test_the_access_log_never_shows_a_query_string(make_retriever):
    """A client that puts the key in the URL (refused: 401) must not get it logged either."""
    import logging

    key = "k3y-" + "x7Rq9" * 6
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    handler = Collect()
    access = logging.getLogger("uvicorn.access")
    app = create_app(make_retriever(), ServeSettings(api_key=key))
    with serving(app, log_level="info") as url:
        access.addHandler(handler)  # after uvicorn configured its loggers
        try:
            r = httpx.post(f"{url}/search?api_key={key}&x=1", json={"query": "Roma"})
            assert r.status_code == 401
            assert httpx.get(f"{url}/health?token={key}").status_code == 200
        finally:
            access.removeHandler(handler)
    logged = "\n".join(lines)
    assert "/search?<redacted>" in logged and "/health?<redacted>" in logged
    assert key not in logged and "api_key" not in logged
