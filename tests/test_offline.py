"""Offline, the default model fails fast with what to do, and every example still runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from bertino_rag import Encoder
from bertino_rag.encoder import DEFAULT_MODEL

from .conftest import REPO


@pytest.fixture
def offline_env(monkeypatch):
    monkeypatch.delenv("BERTINO_RAG_MODEL", raising=False)
    env = {k: v for k, v in os.environ.items() if k != "BERTINO_RAG_MODEL"}
    return {**env, "HF_HUB_OFFLINE": "1"}


def test_default_model_offline_fails_fast_naming_the_local_options(offline_env, minilm_path):
    started = time.perf_counter()
    with pytest.raises(OSError) as err:
        Encoder()
    assert time.perf_counter() - started < 5
    text = str(err.value)
    assert DEFAULT_MODEL in text and "HF_HUB_OFFLINE" in text
    assert "--model" in text and "$BERTINO_RAG_MODEL" in text and minilm_path in text


def test_unreachable_hub_fails_fast_without_retries(offline_env, minilm_path):
    env = {**offline_env, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "bertino_rag.cli", "search", "ciao", "--store",
         "memory"], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 2
    assert time.perf_counter() - started < 60  # imports included; the retries took 80 s
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "127.0.0.1:9 cannot be reached" in lines[0], out.stderr
    assert minilm_path in lines[0] and "Retry" not in out.stderr


@pytest.mark.parametrize("example", [
    "quickstart", pytest.param("rag_langchain", marks=pytest.mark.slow)])
def test_examples_run_offline_on_the_packaged_model(example, offline_env, minilm_path):
    if example == "rag_langchain":
        pytest.importorskip("langchain_core")
    env = {k: v for k, v in offline_env.items() if not k.startswith("OPENAI_")}
    out = subprocess.run([sys.executable, str(REPO / "examples" / f"{example}.py")],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert "running on the packaged all-MiniLM-L6-v2" in out.stderr
    assert "Gioconda" in out.stdout


@pytest.mark.slow
def test_qdrant_example_runs_offline_on_local_mode(offline_env, minilm_path, tmp_path):
    pytest.importorskip("qdrant_client")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "arte.txt").write_text("Leonardo da Vinci dipinse la Gioconda.\n\n"
                                   "La pizza margherita nasce a Napoli.\n", encoding="utf-8")
    env = {k: v for k, v in offline_env.items() if k != "QDRANT_URL"}
    out = subprocess.run([sys.executable, str(REPO / "examples" / "qdrant_server.py"),
                          str(docs), "--path", str(tmp_path / "qd"), "-q", "la Gioconda"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert "running on the packaged all-MiniLM-L6-v2" in out.stderr and "Gioconda" in out.stdout
