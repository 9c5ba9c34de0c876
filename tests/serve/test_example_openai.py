"""examples/openai_embeddings.py end to end: it starts the service and talks to it with the
official openai client only."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("openai")

from ..conftest import REPO  # noqa: E402


def test_openai_embeddings_example(minilm_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("OPENAI_") and k not in ("BERTINO_RAG_MODEL", "BERTINO_RAG_API_KEY")}
    env.update({"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                "PYTHONPATH": str(REPO / "src")})
    out = subprocess.run(
        [sys.executable, str(REPO / "examples" / "openai_embeddings.py"), "--model", minilm_path,
         "--question", "Chi ha dipinto la Gioconda?"],
        capture_output=True, text=True, timeout=300, env=env, cwd=REPO, check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "/v1 serves model@" in out.stdout and "Matryoshka: [384, 256, 128, 64]" in out.stdout
    assert "384 dims" in out.stdout and "128 dims" in out.stdout
    first = out.stdout.split("128 dims\n")[-1].strip().splitlines()[0].split()
    assert first[:2] == ["1", "gioconda"] and first[3] == "gioconda"
    assert "dimensions=100 -> HTTP 400: dimensions=100 is not a Matryoshka dimension" in out.stdout
