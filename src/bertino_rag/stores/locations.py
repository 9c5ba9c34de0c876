"""Where a store is, said without its secrets: every repr and error message goes through here.
Also the one way a store creates a temporary file in its folder (:func:`create_new`), and writes
a small JSON file whole or not at all (:func:`replace_json`)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["create_new", "fsync_folder", "redact", "replace_json", "safe_location"]

#: ``open`` flags of a file that must be new: never through a link someone planted at its name
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)


def create_new(path: Path, mode: str = "wb") -> IO[Any]:
    """Open ``path`` for writing as a new file in the store's folder: whatever is at its name
    (a leftover temporary, or a symbolic link to a file outside the store) is removed first,
    and the file is created exclusively, never following a link, so that a write can never
    land outside the folder."""
    path.unlink(missing_ok=True)
    fd = os.open(path, _NEW, 0o644)
    return os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8")


def replace_json(path: Path, obj: Any, **dump: Any) -> None:
    """Write ``obj`` as JSON at ``path`` atomically: a temporary file beside it (made by
    :func:`create_new`), fsynced, then renamed over ``path``. A crash leaves the old file or the
    new one, never half of one. ``dump``: keyword arguments of ``json.dump``. The rename is made
    durable by :func:`fsync_folder` on the folder, where the caller needs that."""
    tmp = path.with_name(path.name + ".tmp")
    with create_new(tmp, "w") as fh:
        json.dump(obj, fh, **dump)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def fsync_folder(folder: Path) -> None:
    """Make the entries of ``folder`` (a rename, a new file) durable, where the platform can
    open a folder."""
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(folder, os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def safe_location(uri: str) -> str:
    """``uri`` without user info and without secret-looking query parameters.

    ``http://admin:SECRET@host:6333/?api_key=K`` -> ``http://host:6333/``. Used in every repr
    and error message of a store, so that credentials never reach a log.
    """
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if not parts.scheme or not parts.netloc:
        return uri
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port:
        host += f":{port}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                       if not _SECRET_PARAM.search(k)])
    return urlunsplit((parts.scheme, host, parts.path, query, parts.fragment))


_SECRET_PARAM = re.compile(r"key|token|pass|secret|auth|cred", re.IGNORECASE)


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every given secret (and the user info of any URL in it) replaced."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return re.sub(r"(?<=://)[^/\s@]+@", "***@", text)
