"""Compatibility alias of :mod:`bertino_rag.stores.milvus`."""

from __future__ import annotations

from ..stores.milvus import *  # noqa: F403
from ..stores.milvus import LITE_KEEPALIVE, MilvusStore, __all__  # noqa: F401
