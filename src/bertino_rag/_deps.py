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
