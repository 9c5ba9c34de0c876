"""Where a store is, said without its secrets: every repr and error message goes through here."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["redact", "safe_location"]


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
