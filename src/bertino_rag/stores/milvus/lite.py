"""Milvus Lite, the engine a ``.db`` path runs inside this process, and what that asks of us.

- **One process per file.** Milvus Lite serves a ``.db`` file from one server inside this
  process, which holds the file's lock until it stops; pymilvus' ``close()`` leaves it
  running. Stores count their users per file (:func:`acquire`, :func:`release`) and stop the
  server with the last one, so that another process can open the file.
- **Keepalive.** pymilvus pings every 10 s, even with no call in flight; Milvus Lite's gRPC
  server keeps grpc-core's defaults (a ping at most every 5 minutes while no data flows, none
  without a call), so it answers such pings with GOAWAY "too_many_pings" and an idle client
  loses its connection after about 40 s. Clients of a Lite file ping as the server allows
  (:data:`LITE_KEEPALIVE`): the engine runs in this process, a dead connection is not
  something to detect.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

from ..locations import safe_location

__all__ = ["LITE_KEEPALIVE", "acquire", "check_uri", "client_kwargs", "in_use_hint", "is_local",
           "release"]

#: gRPC keepalive of a Milvus Lite client (see the module docstring)
LITE_KEEPALIVE = {"grpc.keepalive_time_ms": 300_000, "grpc.keepalive_permit_without_calls": 0}

_SERVER_SCHEMES = ("http", "https", "tcp", "grpc", "unix")
_USERS: dict[str, int] = {}
_LOCK = threading.Lock()


def is_local(uri: str) -> bool:
    """Whether ``uri`` is a Milvus Lite file (a path ending in ``.db``, no scheme)."""
    return uri.endswith(".db") and not re.match(r"^[a-z]+://", uri)


def check_uri(uri: str) -> None:
    """Refuse a URI that is neither a Milvus Lite ``.db`` file nor a server URL."""
    if is_local(uri):
        return
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme not in _SERVER_SCHEMES:
        raise ValueError(
            f"Milvus location {safe_location(uri)!r} is neither a Milvus Lite file (a path "
            "ending in .db, e.g. milvus:./index.db) nor a server URL (http://host:19530)"
        )


def client_kwargs(uri: str, token: str, timeout: float | None) -> dict[str, Any]:
    """Keyword arguments of ``pymilvus.MilvusClient`` for ``uri``."""
    kwargs: dict[str, Any] = {"uri": uri}
    if is_local(uri):
        kwargs["grpc_options"] = dict(LITE_KEEPALIVE)
    elif token:
        kwargs["token"] = token
    if timeout is not None:
        kwargs["timeout"] = timeout
    return kwargs


def in_use_hint(uri: str, reason: str) -> str:
    """``reason`` a Lite file could not be opened for, with the likely cause when it is
    held by another process."""
    if is_local(uri) and ("open local milvus failed" in reason.lower()
                          or "lock" in reason.lower()):
        return reason + (" (the file is probably in use by another process: Milvus Lite "
                         "opens a .db file in one process at a time)")
    return reason


def acquire(uri: str) -> None:
    """Count a client of the Lite file ``uri``."""
    with _LOCK:
        path = os.path.abspath(uri)
        _USERS[path] = _USERS.get(path, 0) + 1


def release(uri: str) -> None:
    """Forget a client of the Lite file ``uri``; the last one stops its server and frees the
    file for other processes."""
    path = os.path.abspath(uri)
    with _LOCK:
        left = _USERS.get(path, 0) - 1
        if left > 0:
            _USERS[path] = left
            return
        _USERS.pop(path, None)
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:  # an older Milvus Lite: the lock goes with the process
        return
    server_manager_instance.release_server(uri)
