"""Imports that moved between sentence-transformers 5.x releases.

The old paths still work there, deprecated.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def st_module(new: str, old: str) -> ModuleType:
    """``sentence_transformers.<new>`` when present (5.7+ layout), else ``.<old>``."""
    try:
        return importlib.import_module(f"sentence_transformers.{new}")
    except ImportError:
        return importlib.import_module(f"sentence_transformers.{old}")


def evaluation() -> ModuleType:
    return st_module("sentence_transformer.evaluation", "evaluation")


def losses() -> ModuleType:
    return st_module("sentence_transformer.losses", "losses")


def training_args() -> ModuleType:
    return st_module("sentence_transformer.training_args", "training_args")
