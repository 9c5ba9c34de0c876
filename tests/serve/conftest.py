"""A real uvicorn server on a free loopback port, over a retriever on the session MiniLM."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


@pytest.fixture(scope="package", autouse=True)
def _one_torch_thread():
    """MiniLM on a shared CPU: one torch thread is faster than several spinning ones."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@contextlib.contextmanager
def serving(app: Any, log_level: str = "warning") -> Iterator[str]:
    """Run ``app`` with uvicorn in a thread on 127.0.0.1 and a free port; yield its URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()


@pytest.fixture
def make_retriever(encoder, tmp_path):
    from bertino_rag import MemoryStore, Retriever

    def make(name: str = "idx", **kwargs: Any) -> Retriever:
        # one entry per paragraph (as the service tests count them): chunking off
        return Retriever(dim=128, store=MemoryStore(path=tmp_path / name),
                         **{"chunking": False, "encoder": encoder, **kwargs})

    return make


@pytest.fixture
def docs(squad_slice):
    """Twenty-four real Italian paragraphs with their metadata."""
    return squad_slice["docs"][:24]
