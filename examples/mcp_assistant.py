"""What an AI assistant does with `bertino-rag mcp`: launch it over stdio, then call its tools
and read its resources with the official MCP SDK's client. Runs offline.

    python examples/mcp_assistant.py                          # nickprock/multi-sentence-BERTino
    python examples/mcp_assistant.py --model PATH             # any sentence-transformers model
    python examples/mcp_assistant.py --question "Dove nasce il Po?"

The script starts `bertino-rag mcp --store memory:DIR --collection esempi` as a subprocess, as
Claude Desktop, an IDE assistant or any MCP host would, lists its tools, indexes the folder
examples/documenti/ through `index_documents`, asks `search` a question (one hit per
document), reads the whole document of the best hit from its resource URI, and shows the
error a malformed call gets. The configuration a host needs is printed at the start. Offline
(no access to the Hugging Face hub) it uses the packaged all-MiniLM-L6-v2, with a notice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

from mcp import Client, StdioServerParameters

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from rag_service import service_model  # noqa: E402


def server_parameters(model: str | None, store: str) -> StdioServerParameters:
    args = ["-m", "bertino_rag.cli", "mcp", "--store", store, "--collection", "esempi"]
    if model is not None:
        args += ["--model", model, "--dim", "128"]
    env = {k: v for k, v in os.environ.items()
           if k in ("PYTHONPATH", "HF_HUB_OFFLINE", "HF_HOME", "OMP_NUM_THREADS",
                    "BERTINO_RAG_MODEL")}
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return StdioServerParameters(command=sys.executable, args=args, env=env)


def documents() -> list[dict]:
    folder = HERE / "documenti"
    return [{"id": str(p.relative_to(folder)), "text": p.read_text(encoding="utf-8"),
             "metadata": {"tema": p.parent.name}}
            for p in sorted(folder.rglob("*")) if p.suffix in (".md", ".txt")]


async def run(params: StdioServerParameters, question: str) -> None:
    host_config = {"mcpServers": {"bertino-rag": {"command": params.command,
                                                  "args": params.args}}}
    print("MCP host configuration (e.g. claude_desktop_config.json):")
    print(json.dumps(host_config, indent=2, ensure_ascii=False), "\n")
    async with Client(params, read_timeout_seconds=300) as client:
        tools = (await client.list_tools()).tools
        print("tools:", ", ".join(t.name for t in tools))

        out = await client.call_tool("index_documents", {"documents": documents()})
        report = out.structured_content
        print(f"index_documents: {len(report['ids'])} documents, {report['n_chunked']} cut into "
              f"chunks, {report['count']} entries in the collection\n")

        print(f"search: {question}")
        out = await client.call_tool("search", {"query": question, "k": 3,
                                                "group_by": "document"})
        hits = out.structured_content["hits"]
        for n, hit in enumerate(hits, 1):
            doc = hit["metadata"].get("doc_id", hit["id"])
            text = " ".join(hit["text"].split())
            print(f"  [{n}] {hit['score']:.3f} {doc}: {text[:80]}...")

        best = hits[0]["document_uri"]
        body = json.loads((await client.read_resource(best)).contents[0].text)
        n = len(body["entries"])
        print(f"\nresource {best}: {body['id']}, {n} stored {'entry' if n == 1 else 'entries'}")

        out = await client.call_tool("search", {"query": question,
                                                "filter": {"tema": {"$like": "arte"}}})
        print(f"\na malformed filter -> isError={out.is_error}: {out.content[0].text}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--question", default="Chi ha dipinto la Gioconda?")
    parser.add_argument("--model", default=None, help="embedding model the server loads")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        params = server_parameters(service_model(args.model), f"memory:{tmp}/index")
        asyncio.run(run(params, args.question))
    return 0


if __name__ == "__main__":
    sys.exit(main())
