"""``bertino-rag serve`` as a process: startup checks, the key in its output, and a graceful
shutdown (SIGTERM) in the middle of a write."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from bertino_rag.cli import main
from bertino_rag.cli.serve import is_loopback
from bertino_rag.serve.client import BertinoClient

KEY = "serve-key-" + "Zq81" * 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_loopback_hosts():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.20", "example.org"))


def test_refuses_to_expose_without_a_key(capsys, monkeypatch):
    monkeypatch.delenv("BERTINO_RAG_API_KEY", raising=False)
    started = time.perf_counter()
    # the model does not exist: the refusal must come before anything is loaded
    assert main(["serve", "--host", "0.0.0.0", "--model", "/no/such/model"]) == 2
    err = capsys.readouterr().err
    assert "API key is required" in err and "BERTINO_RAG_API_KEY" in err
    assert main(["serve", "--host", "0.0.0.0", "--api-key", "short"]) == 2
    assert "shorter than 16 characters" in capsys.readouterr().err
    assert time.perf_counter() - started < 5


def test_the_client_imports_no_torch():
    code = ("import sys, bertino_rag.serve.client, bertino_rag.serve.langchain; "
            "heavy = [m for m in ('torch', 'sentence_transformers', 'transformers', 'fastapi', "
            "'uvicorn') if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited: {proc.stdout.read()}")  # type: ignore[union-attr]
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("the server did not become ready")


def test_sigterm_during_a_write_finishes_it_durably(tmp_path, minilm_path, encoder, squad_slice):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    store = tmp_path / "index"
    env = {**os.environ, "BERTINO_RAG_API_KEY": KEY, "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bertino_rag.cli", "serve", "--model", minilm_path,
         "--store", f"memory:{store}", "--port", str(port), "--index-batch", "4",
         "--log-level", "debug"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    try:
        _wait_ready(url, proc)
        docs = [{"text": q, "id": f"q{i}"} for i, q in enumerate(squad_slice["queries"][:96])]
        result: dict = {}

        def write() -> None:
            with BertinoClient(url, api_key=KEY, timeout=300) as client:
                try:
                    result["report"] = client.index(docs)
                except Exception as err:  # noqa: BLE001 - checked below
                    result["error"] = err

        writer = threading.Thread(target=write)
        writer.start()
        with BertinoClient(url, api_key=KEY) as client:
            deadline = time.monotonic() + 120
            while client.collections()[0]["count"] == 0:  # the write has begun
                assert time.monotonic() < deadline
                time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert writer.is_alive(), "the write ended before the signal: make it longer"
        writer.join(300)
        assert "error" not in result, result.get("error")
        assert result["report"]["n_written"] == len(docs)
        # uvicorn re-raises the signal once it has shut down gracefully, so that the process
        # manager sees a stop by SIGTERM (systemd counts it as a clean stop)
        assert proc.wait(120) in (0, -signal.SIGTERM)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/health", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    output = proc.stdout.read()  # type: ignore[union-attr]
    assert "Shutting down" in output and "API key required" in output
    assert output.index("POST /documents HTTP/1.1\" 200") < output.index("the store is closed")
    assert KEY not in output
    from bertino_rag import MemoryStore, Retriever

    with Retriever(dim=128, encoder=encoder, store=MemoryStore(path=store)) as reopened:
        assert reopened.count() == len(docs)
        assert reopened.get(["q5"])[0].text == docs[5]["text"]
