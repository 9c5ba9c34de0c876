"""Compatibility alias of :mod:`bertino_rag.stores`, the stores' home since 0.2.

``from bertino_rag.adapters import QdrantStore`` keeps working; new code imports from
:mod:`bertino_rag.stores`.
"""

from __future__ import annotations

from typing import Any

from ..stores import *  # noqa: F403
from ..stores import __all__ as __all__  # noqa: PLE0604


def __getattr__(name: str) -> Any:
    from .. import stores

    return getattr(stores, name)
