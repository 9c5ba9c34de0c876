"""The MCP server through the official SDK's own client: in process, over stdio (the command
line), and over streamable HTTP with an API key."""

from __future__ import annotations

import json
import os
import sys

import pytest

pytest.importorskip("mcp")

from mcp import Client, StdioServerParameters  # noqa: E402
from mcp.shared.exceptions import MCPError  # noqa: E402

from bertino_rag import MemoryStore, Retriever  # noqa: E402
from bertino_rag.cli import main  # noqa: E402
from bertino_rag.integrations.mcp import create_mcp_server, document_uri, http_app  # noqa: E402

from ..conftest import REPO  # noqa: E402

KEY = "k3y-" + "mCp7q" * 6


@pytest.fixture
def retriever(encoder, tmp_path):
    r = Retriever(dim=128, encoder=encoder, store=MemoryStore(path=tmp_path / "idx"),
                  collection="wiki")
    yield r
    r.close()


def _pairs(hits):
    return [(h["id"], round(h["score"], 5)) for h in hits]


async def test_tools_translate_onto_the_retriever(retriever, squad_slice):
    docs = squad_slice["docs"][:6]  # long paragraphs: some are chunked
    server = create_mcp_server(retriever)
    async with Client(server) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == {"search", "index_documents", "delete_documents", "list_collections"}
        props = tools["search"].input_schema["properties"]
        assert set(props) == {"query", "k", "filter", "mode", "group_by", "expand"}
        assert tools["search"].output_schema is not None
        assert tools["search"].annotations.read_only_hint is True

        out = await client.call_tool("index_documents", {"documents": docs})
        assert not out.is_error
        report = out.structured_content
        assert report["ids"] == [d["id"] for d in docs] and report["n_chunked"] >= 1
        assert report["count"] == retriever.count() > len(docs)

        question = squad_slice["queries"][0]
        out = await client.call_tool("search", {"query": question, "k": 4,
                                                "filter": {"para": {"$lte": 3}}})
        hits = out.structured_content["hits"]
        direct = retriever.search(question, 4, {"para": {"$lte": 3}})
        assert _pairs(hits) == [(h.id, round(h.score, 5)) for h in direct]
        assert json.loads(out.content[0].text)["hits"][0]["id"] == direct[0].id

        grouped = await client.call_tool("search", {"query": question, "k": 3,
                                                    "group_by": "document"})
        docs_hit = [h["metadata"].get("doc_id", h["id"]) for h in
                    grouped.structured_content["hits"]]
        assert len(docs_hit) == len(set(docs_hit)) == 3

        # the resource of a chunked hit's document: its chunks, in order
        chunked = next(h for h in grouped.structured_content["hits"] if "doc_id" in h["metadata"])
        doc_id = chunked["metadata"]["doc_id"]
        assert chunked["document_uri"] == document_uri("wiki", doc_id)
        assert "%23" in chunked["document_uri"]  # squad ids have a '#'
        read = await client.read_resource(chunked["document_uri"])
        body = json.loads(read.contents[0].text)
        assert body["id"] == doc_id and len(body["entries"]) >= 2
        assert [e["metadata"]["chunk"] for e in body["entries"]] == list(
            range(len(body["entries"])))
        original = next(d["text"] for d in docs if d["id"] == doc_id)
        assert all(e["text"] in original for e in body["entries"])

        collections = (await client.call_tool("list_collections", {})).structured_content
        assert collections["collections"][0] == {
            "name": "wiki", "served": True, "count": retriever.count(),
            "stamp": retriever.stamp.to_dict()}

        before = retriever.count()
        out = await client.call_tool("delete_documents", {"ids": [doc_id, "not-there"]})
        assert out.structured_content == {"deleted": len(body["entries"]),
                                          "count": before - len(body["entries"])}
        assert retriever.store.ids_of_documents([doc_id]) == []
        # a plain string is a document too
        out = await client.call_tool("index_documents",
                                     {"documents": ["La pizza margherita nasce a Napoli."]})
        assert out.structured_content["n_written"] == 1


async def test_mistakes_are_mcp_errors_with_the_librarys_message(retriever):
    server = create_mcp_server(retriever)
    async with Client(server) as client:
        await client.call_tool("index_documents", {"documents": ["Il Po sfocia nell'Adriatico."]})

        async def error(name, arguments):
            out = await client.call_tool(name, arguments)
            assert out.is_error, out
            return out.content[0].text

        text = await error("search", {"query": "Po", "filter": {"anno": {"$near": 3}}})
        assert "unknown operator '$near'" in text and "\n" not in text
        text = await error("search", {"query": "Po", "mode": "hybrid"})
        assert "needs a lexical index" in text and "hybrid=True" in text
        text = await error("search", {"query": "Po", "mode": "fuzzy"})
        assert "mode" in text and "'dense', 'lexical' or 'hybrid'" in text
        assert "k" in await error("search", {"query": "Po", "k": 0})
        assert "query" in await error("search", {"k": 3})  # a malformed call
        text = await error("index_documents", {"documents": [{"text": "   "}]})
        assert "position 0 has empty text" in text
        assert "Unknown tool" in await error("rerank", {"query": "Po"})
        with pytest.raises(MCPError, match="document 'nope' is not in collection 'wiki'") as e:
            await client.read_resource(document_uri("wiki", "nope"))
        assert e.value.code == -32602
        with pytest.raises(MCPError, match="collection 'other' is not served here"):
            await client.read_resource(document_uri("other", "x"))
        # still serving
        out = await client.call_tool("search", {"query": "fiume", "k": 1})
        assert out.structured_content["hits"][0]["text"].startswith("Il Po")
    assert retriever.count() == 1


async def test_read_only_offers_search_only(retriever):
    retriever.index(["La pizza margherita nasce a Napoli."])
    async with Client(create_mcp_server(retriever, read_only=True)) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names == {"search", "list_collections"}
        out = await client.call_tool("index_documents", {"documents": ["x"]})
        assert out.is_error and retriever.count() == 1


async def test_streamable_http_requires_the_key(retriever):
    httpx2 = pytest.importorskip("httpx2")
    from mcp.client.streamable_http import streamable_http_client

    from ..serve.conftest import serving

    retriever.index(["La pizza margherita nasce a Napoli."])
    app = http_app(create_mcp_server(retriever), api_key=KEY)
    with serving(app) as url:
        endpoint = f"{url}/mcp"
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as http:
            async with Client(streamable_http_client(endpoint, http_client=http)) as client:
                out = await client.call_tool("search", {"query": "pizza", "k": 1})
                assert out.structured_content["hits"][0]["text"].startswith("La pizza")
        response = httpx2.post(endpoint, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert response.status_code == 401 and "API key" in response.json()["detail"]


async def test_stdio_through_the_command_line(minilm_path, tmp_path):
    env = {"PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "bertino_rag.cli", "mcp", "--model", minilm_path, "--dim", "128",
              "--store", f"memory:{tmp_path / 'idx'}", "--collection", "appunti"],
        env=env, cwd=str(tmp_path),
    )
    async with Client(params, read_timeout_seconds=120) as client:
        out = await client.call_tool("index_documents", {"documents": [
            {"text": "La pizza margherita nasce a Napoli.", "id": "pizza",
             "metadata": {"tema": "cucina"}},
            {"text": "Il Po sfocia nel mare Adriatico.", "id": "po"},
        ]})
        assert out.structured_content["count"] == 2
        out = await client.call_tool("search", {"query": "Quale fiume sfocia nell'Adriatico?",
                                                "k": 1})
        assert out.structured_content["hits"][0]["id"] == "po"
        out = await client.call_tool("search", {"query": "x", "filter": {"tema": {"$bad": 1}}})
        assert out.is_error and "unknown operator '$bad'" in out.content[0].text
    assert os.path.isdir(tmp_path / "idx")


def test_command_line_mistakes_are_one_line(tmp_path, minilm_path, capsys):
    assert main(["mcp", "--transport", "http", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "API key is required" in err and len(err.strip().splitlines()) == 1
    assert main(["mcp", "--api-key", KEY]) == 2
    assert "--api-key applies to --transport http" in capsys.readouterr().err
    Retriever(dim=128, model=minilm_path, store=f"memory:{tmp_path / 'idx'}",
              collection="esiste").close()
    code = main(["mcp", "--read-only", "--model", minilm_path, "--store",
                 f"memory:{tmp_path / 'idx'}", "--collection", "manca"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "collection 'manca' does not exist" in err and "'esiste'" in err
