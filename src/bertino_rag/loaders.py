"""Compatibility alias of :mod:`bertino_rag.indexing.loaders`."""

from __future__ import annotations

from .indexing.loaders import *  # noqa: F403
from .indexing.loaders import __all__ as __all__  # noqa: PLE0604
