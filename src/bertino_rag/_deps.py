"""Optional dependencies: import them where they are used, with an error naming the extra."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise ImportError telling which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{module} is not installed; it comes with the '{extra}' extra: "
            f"pip install 'bertino-rag[{extra}]'"
        ) from err


def st_module(name: str) -> ModuleType:
    """``sentence_transformers.sentence_transformer.<name>`` (5.5+ and 6.x layout), else the
    pre-5.5 ``sentence_transformers.<name>`` (``evaluation``, ``losses``, ``training_args``;
    ``modules`` was ``sentence_transformers.models``).

    The one place that knows where sentence-transformers keeps its modules.
    """
    try:
        return importlib.import_module(f"sentence_transformers.sentence_transformer.{name}")
    except ImportError:
        old = {"modules": "models"}.get(name, name)
        return importlib.import_module(f"sentence_transformers.{old}")
