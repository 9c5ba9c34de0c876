"""Compatibility alias of :mod:`bertino_rag.stores.migrate`."""

from __future__ import annotations

from .stores.migrate import *  # noqa: F403
from .stores.migrate import __all__ as __all__  # noqa: PLE0604
