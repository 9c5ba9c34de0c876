"""examples/rag_service.py end to end: it starts the service, indexes through the client, runs
the chain against it, stops the service, and its own process never loads torch."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("langchain_core")

from ..conftest import REPO  # noqa: E402


def test_rag_service_example(minilm_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("OPENAI_") and k not in ("BERTINO_RAG_MODEL", "BERTINO_RAG_API_KEY")}
    env.update({"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    out = subprocess.run(
        [sys.executable, str(REPO / "examples" / "rag_service.py"), "--model", minilm_path,
         "--question", "Quale fiume sfocia nel mare Adriatico?", "--k", "2"],
        capture_output=True, text=True, timeout=300, env=env, cwd=REPO, check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "indexed 8 passages, 8 in the collection" in out.stdout
    passages = out.stdout.split("Passaggi recuperati dal servizio:")[1].split("Prompt")[0]
    assert "id=po:" in passages.splitlines()[1]
    assert "Domanda: Quale fiume sfocia nel mare Adriatico?" in out.stdout.split("--- user")[1]
    assert "torch loaded in this process: no" in out.stdout
