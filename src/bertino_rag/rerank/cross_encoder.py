"""A sentence-transformers ``CrossEncoder`` as a :class:`~bertino_rag.rerank.Reranker`, on
torch, ONNX (fp32 or dynamic int8) or OpenVINO (float, or static int8 calibrated on Italian
question-passage pairs).

Pairs are scored by ``CrossEncoder.predict`` (which sorts them by length before batching, so a
batch pads little) with ``truncation="only_second"``: a pair longer than the model reads loses
the end of its passage, never the query. A query longer than half the window is cut to that
half first (the tokenizer could not keep it whole and still read a passage).

ONNX and OpenVINO exports are made once with sentence-transformers' own backend support and
cached like the encoder's (:func:`bertino_rag.encoder.backends.backend_cache_dir`): in the
model folder when it is writable, else under ``$BERTINO_RAG_CACHE``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RerankerError
from ..validation import positive_int, reranker_weight

__all__ = ["BACKENDS", "WEIGHT_FILE", "CrossEncoderReranker", "check_cross_encoder",
           "store_weight", "stored_weight"]

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx", "openvino")
#: the file of a reranker folder holding the weight ``train --task rerank`` chose on its dev
#: articles (``{"weight": w, ...}``)
WEIGHT_FILE = "bertino_rag_reranker.json"


def stored_weight(name: str) -> float | None:
    """The weight stored in the folder ``name`` (``None``: no such file, or not a folder).

    Raises:
        RerankerError: the file is unreadable or its weight is not a number in (0, 1].
    """
    path = Path(name) / WEIGHT_FILE
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))["weight"]
        return reranker_weight(value)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RerankerError(f"{path} does not hold a reranker weight ({err}): fix or delete "
                            "it, or pass weight= explicitly") from err


def store_weight(folder: str | os.PathLike[str], report: dict[str, Any]) -> Path:
    """Write ``report`` (``{"weight": w, ...}``) as the folder's :data:`WEIGHT_FILE`, whole or
    not at all: a temporary file, fsynced, then renamed over the old one, so that a crash
    leaves either the previous weight or the new one, never half a file.

    Raises:
        ValueError: ``report["weight"]`` is missing or not a number in (0, 1]; nothing is
            written.
    """
    from ..stores.locations import fsync_folder, replace_json

    if "weight" not in report:
        raise ValueError(f"a reranker weight report needs a 'weight' key, got {sorted(report)}")
    reranker_weight(report["weight"])
    path = Path(folder) / WEIGHT_FILE
    replace_json(path, report, indent=2)
    fsync_folder(path.parent)
    return path


def _architectures(name: str) -> list[str]:
    """The ``architectures`` of the model's ``config.json`` (a local folder, or a hub id read
    through transformers, which honours ``HF_HUB_OFFLINE``)."""
    if os.path.isdir(name):
        path = Path(name) / "config.json"
        if not path.is_file():
            raise RerankerError(f"{name} has no config.json: not a transformers model folder; "
                                "pass a cross-encoder's folder or hub id")
        config = json.loads(path.read_text(encoding="utf-8"))
        return list(config.get("architectures") or [])
    try:
        from transformers import AutoConfig

        return list(AutoConfig.from_pretrained(name).architectures or [])
    except OSError as err:
        raise RerankerError(f"cannot read the configuration of reranker {name!r}: {err}") \
            from err


def check_cross_encoder(name: str) -> None:
    """Refuse a model that is not a cross-encoder, before its weights load.

    Raises:
        RerankerError: its architecture has no sequence-classification head (an embedding
            model such as a sentence-transformers bi-encoder, or a bare transformer).
    """
    arch = _architectures(name)
    if any(a.endswith("ForSequenceClassification") for a in arch):
        return
    raise RerankerError(
        f"{name} is not a cross-encoder (its architecture is {arch or 'not declared'}, with no "
        "sequence-classification head): it is an embedding model or a bare transformer, and "
        "would score pairs with random weights. Pass a cross-encoder, or train one on your "
        "documents with `bertino-rag train --task rerank --base-model "
        f"{name}`")


def _export(name: str, backend: str, quantize: str | None, kwargs: dict[str, Any]) -> Any:
    """A CrossEncoder on ``backend``, exported (and quantized) once and cached."""
    from sentence_transformers import CrossEncoder

    from ..encoder.backends import (
        _require_backend,
        backend_cache_dir,
        cpu_quantize_config,
        openvino_precision,
        quantized_onnx_file,
    )

    if backend == "openvino" and quantize is not None:
        kwargs = {**kwargs, "model_kwargs": {"ov_config": openvino_precision(int8=True)}}

    _require_backend(backend)
    folder, _ = backend_cache_dir(name, f"rerank-{backend}")
    main = "onnx/model.onnx" if backend == "onnx" else "openvino/openvino_model.xml"
    if not (folder / main).is_file():
        logger.warning("exporting reranker %s to %s once; cached in %s", name, backend, folder)
        model = CrossEncoder(name, backend=backend, **kwargs)
        model.save_pretrained(str(folder))
    if quantize is None:
        return CrossEncoder(str(folder), backend=backend, **kwargs)
    if backend == "openvino":
        return _openvino_int8(folder, kwargs)
    preset = cpu_quantize_config()
    file = f"onnx/{quantized_onnx_file(preset)}"
    if not (folder / file).is_file():
        from sentence_transformers.backend import export_dynamic_quantized_onnx_model

        logger.warning("quantizing reranker %s to int8 (%s) once; cached as %s", name, preset,
                       folder / file)
        export_dynamic_quantized_onnx_model(
            CrossEncoder(str(folder), backend="onnx", **kwargs), preset, str(folder))
    return CrossEncoder(str(folder), backend="onnx", model_kwargs={"file_name": file},
                        **kwargs)


def calibration_pairs() -> list[tuple[str, str]]:
    """(question, passage) pairs for OpenVINO's static int8 calibration: each of the shipped
    Italian calibration questions with two of the other shipped texts (sentences and
    passages), so that the activation ranges come from pairs like those a reranker reads."""
    from ..encoder.backends import default_calibration_texts

    texts = default_calibration_texts()
    questions = [t for t in texts if t.endswith("?")]
    others = [t for t in texts if not t.endswith("?")]
    return [(q, others[(2 * i + j) % len(others)])
            for i, q in enumerate(questions) for j in range(2)]


def _openvino_int8(folder: Path, kwargs: dict[str, Any]) -> Any:
    """The static int8 OpenVINO model of the exported cross-encoder in ``folder``, made once
    (calibrated on :func:`calibration_pairs`, named by their digest) and cached beside it."""
    from sentence_transformers import CrossEncoder

    from ..encoder.backends import (
        _quiet_optimum_intel,
        quantize_openvino_model,
        quantized_openvino_file,
    )

    pairs = calibration_pairs()
    file = quantized_openvino_file([f"{q}\t{p}" for q, p in pairs],
                                   int(kwargs.get("max_length") or 0))
    target = folder / file
    if not target.is_file():
        logger.warning("quantizing reranker %s to int8 (OpenVINO static, %d calibration pairs) "
                       "once; cached as %s", folder, len(pairs), target)
        with _quiet_optimum_intel():
            model = CrossEncoder(str(folder), backend="openvino", **kwargs)
        # the pairs as the model reads them (the passage cut, the question kept whole)
        samples = [model.tokenizer(q, p, truncation="only_second",
                                   max_length=model.max_seq_length) for q, p in pairs]
        quantize_openvino_model(model.transformers_model, samples, folder, target)
    ov = dict(kwargs["model_kwargs"])
    with _quiet_optimum_intel():
        return CrossEncoder(str(folder), backend="openvino",
                            **{**kwargs, "model_kwargs": {**ov, "file_name": file}})


class CrossEncoderReranker:
    """Scores (query, passage) pairs with a cross-encoder.

    Args:
        model: a hub id or local folder of a cross-encoder (one output label), or a loaded
            ``sentence_transformers.CrossEncoder``.
        backend: ``"torch"``, ``"onnx"`` or ``"openvino"`` (for a name or folder).
        quantize: ``"int8"``: dynamic int8 ONNX (``backend="onnx"``), or static int8
            OpenVINO (``backend="openvino"``, calibrated on Italian question-passage pairs;
            on an AVX2 CPU it measured slower than OpenVINO's fp32: docs/benchmarks.md).
        batch_size: pairs per forward pass (default: 32; 1 with int8 ONNX, whose dynamic
            quantization would make a pair's score depend on its batch:
            :func:`~bertino_rag.encoder.backends.default_batch_size`).
        max_length: tokens read per pair (default: the model's).
        device: torch device (default: sentence-transformers' choice).
        weight: its share of the final score, in (0, 1]: 1 orders by its score alone; below 1
            the funnel blends it with the retrieval score
            (:func:`bertino_rag.search.rerank.blend`). Default: the weight stored in the
            model's folder by ``train --task rerank`` (:data:`WEIGHT_FILE`), else 1.

    Raises:
        RerankerError: a model that is not a cross-encoder, or one with several labels.
        ValueError: an unknown backend, ``quantize`` other than ``"int8"`` with ONNX or
            OpenVINO, or a ``weight`` outside (0, 1].
    """

    def __init__(self, model: Any, *, backend: str = "torch", quantize: str | None = None,
                 batch_size: int | None = None, max_length: int | None = None,
                 device: str | None = None, weight: float | None = None) -> None:
        if weight is not None:
            weight = reranker_weight(weight)
        elif isinstance(model, (str, os.PathLike)) and os.path.isdir(model):
            weight = stored_weight(os.fspath(model))
        self.weight = 1.0 if weight is None else weight
        if backend not in BACKENDS:
            raise ValueError(f"unknown reranker backend {backend!r}; choose one of "
                             f"{list(BACKENDS)}")
        if quantize not in (None, "int8") or (quantize and backend == "torch"):
            raise ValueError(f"quantize={quantize!r} with backend={backend!r}: a reranker is "
                             "quantized with quantize='int8', backend='onnx' (dynamic int8) or "
                             "quantize='int8', backend='openvino' (static int8)")
        from ..encoder.backends import default_batch_size

        self.batch_size = positive_int(
            default_batch_size(backend, quantize) if batch_size is None else batch_size,
            "batch_size")
        if max_length is not None:
            max_length = positive_int(max_length, "max_length")
        if isinstance(model, (str, os.PathLike)):
            name = os.fspath(model)
            check_cross_encoder(name)
            kwargs: dict[str, Any] = {"device": device, "max_length": max_length}
            if backend == "torch":
                from sentence_transformers import CrossEncoder

                model = CrossEncoder(name, **kwargs)
            else:
                model = _export(name, backend, quantize, kwargs)
            self.name = name
        else:
            config = getattr(getattr(model, "model", None), "config", None)
            self.name = str(getattr(config, "_name_or_path", "") or type(model).__name__)
        if int(getattr(model, "num_labels", 1)) != 1:
            raise RerankerError(f"cross-encoder {self.name} has {model.num_labels} labels (a "
                                "classifier, e.g. NLI): a reranker scores a pair with one")
        self.model = model
        self.max_length = int(max_length or model.max_seq_length or 512)
        self._tokenizer = model.tokenizer

    def _query(self, query: str) -> str:
        """``query``, cut to half the window when longer (then a passage still fits)."""
        budget = max(1, self.max_length // 2)
        enc = self._tokenizer(query, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        if len(offsets) <= budget:
            return query
        return query[: offsets[budget - 1][1]]

    def score_pairs(self, queries: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        """One score per (query, passage) pair, higher is better."""
        if not len(texts):
            return np.empty(0, dtype=np.float64)
        cut: dict[str, str] = {}
        pairs = []
        for q, t in zip(queries, texts, strict=True):
            if q not in cut:
                cut[q] = self._query(q)
            pairs.append((cut[q], t))
        scores = self.model.predict(
            pairs, batch_size=self.batch_size, show_progress_bar=False,
            processing_kwargs={"text": {"truncation": "only_second",
                                        "max_length": self.max_length}})
        return np.asarray(scores, dtype=np.float64).reshape(-1)

    def __repr__(self) -> str:
        extra = f", weight={self.weight}" if self.weight < 1.0 else ""
        return f"CrossEncoderReranker({self.name!r}{extra})"
