"""examples/mcp_assistant.py end to end: it launches `bertino-rag mcp` over stdio and uses it
as an assistant would, with the official SDK's client."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("mcp")

from ..conftest import REPO  # noqa: E402


def test_mcp_assistant_example(minilm_path):
    env = {k: v for k, v in os.environ.items() if k != "BERTINO_RAG_MODEL"}
    env.update({"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                "PYTHONPATH": str(REPO / "src")})
    out = subprocess.run(
        [sys.executable, str(REPO / "examples" / "mcp_assistant.py"), "--model", minilm_path],
        capture_output=True, text=True, timeout=300, env=env, cwd=REPO, check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert '"mcpServers"' in out.stdout
    assert "tools: search, list_collections, index_documents, delete_documents" in out.stdout
    assert "index_documents: 7 documents, 1 cut into chunks" in out.stdout
    hits = out.stdout.split("search: ")[1].splitlines()[1:4]
    assert "arte/gioconda.md" in hits[0]
    assert len({line.split(":")[0].split()[-1] for line in hits}) == 3  # one hit per document
    assert "resource bertino://esempi/documents/arte%2Fgioconda.md: arte/gioconda.md" in out.stdout
    assert "isError=True" in out.stdout and "unknown operator '$like'" in out.stdout
