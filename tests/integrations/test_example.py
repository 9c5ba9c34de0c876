"""examples/rag_langchain.py end to end, in a subprocess, with the real MiniLM.

Offline it must print the retrieved passages and the exact prompt. With an OpenAI-compatible
endpoint in the environment it must send that prompt to ``/chat/completions`` and print the
reply: a local HTTP server records the request and answers in the OpenAI format.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytest.importorskip("langchain_core")

from ..conftest import REPO, minilm  # noqa: E402

SCRIPT = REPO / "examples" / "rag_langchain.py"
QUESTION = "Quale fiume sfocia nel mare Adriatico?"


def run_example(*extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("OPENAI_") and k != "BERTINO_RAG_MODEL"}
    clean.update({"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})})
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--model", minilm(), "--question", QUESTION, *extra],
        capture_output=True, text=True, timeout=300, env=clean, cwd=REPO,
    )


@pytest.fixture(scope="module")
def expected(request):
    """The passages the example should retrieve: the same search, done here."""
    from bertino_rag import Retriever

    from .shared import minilm_encoder

    docs = runpy.run_path(str(SCRIPT), run_name="example")["DOCUMENTS"]
    retriever = Retriever(dim=128, encoder=minilm_encoder(), collection="example")
    retriever.index(docs)
    return retriever.search(QUESTION, k=2)


def test_offline_prints_passages_and_the_prompt(expected):
    proc = run_example("--k", "2")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"Domanda: {QUESTION}" in out
    listing = out.split("Prompt che verrebbe inviato al modello:")[0]
    for n, hit in enumerate(expected, 1):
        assert f"[{n}] score={hit.score:.3f} id={hit.id}: {hit.text}" in listing
    prompt = out.split("Prompt che verrebbe inviato al modello:")[1]
    assert "--- system" in prompt and "--- user" in prompt
    assert f"[1] {expected[0].text}\n\n[2] {expected[1].text}" in prompt
    assert f"Domanda: {QUESTION}" in prompt
    assert "OPENAI_BASE_URL" in out and "Risposta" not in out


class _Endpoint(BaseHTTPRequestHandler):
    requests: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append({"path": self.path, "auth": self.headers.get("Authorization"),
                              "body": body})
        if self.path != "/v1/chat/completions":
            self.send_error(404, "no such route")
            return
        reply = {
            "id": "chatcmpl-test", "object": "chat.completion", "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "Il Po [1]."}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Endpoint.requests = []
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()


def test_stdlib_chat_client_speaks_the_openai_protocol(endpoint):
    from langchain_core.prompts import ChatPromptTemplate

    example = runpy.run_path(str(SCRIPT), run_name="example")
    llm = example["http_chat_model"](endpoint, "sk-test", "modello-di-prova")
    prompt = ChatPromptTemplate.from_messages([("system", "Sii breve."), ("human", "{q}")])
    answer = (prompt | llm).invoke({"q": QUESTION})
    assert answer.content == "Il Po [1]."
    (req,) = _Endpoint.requests
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sk-test"
    assert req["body"]["messages"] == [{"role": "system", "content": "Sii breve."},
                                       {"role": "user", "content": QUESTION}]
    no_key = example["http_chat_model"](endpoint, None, "m")
    no_key.invoke(prompt.invoke({"q": "ciao"}))
    assert _Endpoint.requests[-1]["auth"] is None
    broken = example["http_chat_model"](endpoint.replace("/v1", "/missing"), None, "m")
    with pytest.raises(RuntimeError, match="answered HTTP 404"):
        broken.invoke(prompt.invoke({"q": "ciao"}))


@pytest.mark.slow
def test_with_an_openai_compatible_endpoint(expected, endpoint):
    proc = run_example("--k", "2", env={
        "OPENAI_BASE_URL": endpoint, "OPENAI_API_KEY": "sk-test",
        "OPENAI_MODEL": "modello-di-prova",
    })
    assert proc.returncode == 0, proc.stderr
    assert "Risposta:\nIl Po [1]." in proc.stdout
    assert "modello-di-prova at http://127.0.0.1" in proc.stdout
    (req,) = _Endpoint.requests
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sk-test"
    assert req["body"]["model"] == "modello-di-prova"
    roles = [m["role"] for m in req["body"]["messages"]]
    assert roles == ["system", "user"]
    user = req["body"]["messages"][1]["content"]
    assert f"[1] {expected[0].text}" in user and user.endswith(f"Domanda: {QUESTION}")


@pytest.mark.slow
def test_unreachable_endpoint_fails_with_a_clear_message():
    proc = run_example("--k", "1", env={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
    assert proc.returncode == 1
    assert "cannot reach http://127.0.0.1:9/v1/chat/completions" in proc.stderr
