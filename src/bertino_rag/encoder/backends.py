"""Loading a SentenceTransformer on the torch, ONNX or OpenVINO backend, exports cached.

ONNX and OpenVINO models are exported once, through sentence-transformers' own backend support,
and cached:

- next to the model (``<model>/onnx/model.onnx``, the sentence-transformers layout) when the
  model is a local folder we may write to;
- otherwise (a hub id, a folder inside site-packages or the Hugging Face cache, a read-only
  folder) in ``$BERTINO_RAG_CACHE/<backend>/<model-key>`` (default ``~/.cache/bertino-rag``),
  a complete, loadable copy of the model.

int8 ONNX models are made with ``export_dynamic_quantized_onnx_model`` (dynamic quantization,
no calibration data) and cached beside the fp32 export under the name sentence-transformers
gives them (:func:`quantized_onnx_file`: ``onnx/model_qint8_<config>.onnx``, ``quint8`` for
``avx2``).

int8 OpenVINO models are made with optimum-intel's ``OVQuantizer`` (NNCF post-training static
quantization: weights and activations in int8, activation ranges calibrated on sample texts) and
cached as ``openvino/openvino_model_qint8_<digest>.xml``, the digest naming the calibration
texts. The default calibration set is a few Italian questions, sentences and passages shipped
with the package (``_calibration_it.txt``); a sample of the corpus to index is better.

Environment knobs:
    BERTINO_RAG_THREADS: intra-op threads of the encoder (default: the CPUs this process may
        run on, ``os.sched_getaffinity``). For torch this calls ``torch.set_num_threads``,
        which is process-wide, and only when set (here or with ``threads=``).
    BERTINO_RAG_CACHE: where exported models are cached when the model folder is read-only.
    BERTINO_RAG_ORT_SPIN: ``1`` lets ONNX Runtime's idle threads spin-wait (its default, a
        little faster on a dedicated machine); unset, they sleep, which is much faster when
        the CPUs are shared with other busy processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import shutil
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..validation import positive_int
from .base import DEFAULT_BATCH_SIZE

__all__ = [
    "QUANTIZE_CONFIGS",
    "available_cpus",
    "backend_cache_dir",
    "calibration_digest",
    "calibration_inputs",
    "check_calibration",
    "cpu_quantize_config",
    "default_batch_size",
    "default_calibration_texts",
    "load_sentence_transformer",
    "openvino_precision",
    "quantize_openvino_model",
    "quantized_onnx_file",
    "quantized_openvino_file",
    "resolve_threads",
]

logger = logging.getLogger("bertino_rag.encoder")

THREADS_ENV = "BERTINO_RAG_THREADS"
CACHE_ENV = "BERTINO_RAG_CACHE"
SPIN_ENV = "BERTINO_RAG_ORT_SPIN"
BACKENDS = ("torch", "onnx", "openvino")
#: dynamic-quantization presets of optimum's ``AutoQuantizationConfig``
QUANTIZE_CONFIGS = ("avx512_vnni", "avx512", "avx2", "arm64")


def available_cpus() -> int:
    """CPUs this process may run on (affinity-aware), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def resolve_threads(threads: int | None) -> int | None:
    """``threads``, else ``$BERTINO_RAG_THREADS``, else ``None`` (the runtime's default)."""
    if threads is None:
        env = os.environ.get(THREADS_ENV, "").strip()
        if not env:
            return None
        try:
            threads = int(env)
        except ValueError as err:
            raise ValueError(f"${THREADS_ENV} must be a positive int, got {env!r}") from err
    return positive_int(threads, "threads")


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_quantize_config() -> str:
    """The int8 preset for this CPU: avx512_vnni > avx512 > avx2; arm64 on ARM."""
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    flags = _cpu_flags()
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags and "avx512bw" in flags:
        return "avx512"
    return "avx2"


def quantized_onnx_file(preset: str) -> str:
    """The file name that sentence-transformers' ``export_dynamic_quantized_onnx_model`` gives
    the int8 model of ``preset`` in a model's ``onnx/`` folder: ``model_<weights type>_<preset>
    .onnx``, the weights type being optimum's for that preset (``quint8`` for ``avx2``,
    ``qint8`` for the others)."""
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    weights = getattr(AutoQuantizationConfig, preset)(is_static=False).weights_dtype
    return f"model_{weights.name.lower()}_{preset}.onnx"


def quantized_openvino_file(texts: list[str], max_length: int) -> str:
    """The static int8 OpenVINO model calibrated on ``texts`` at ``max_length``, in a model's
    folder: ``openvino/openvino_model_qint8_<digest>.xml`` (:func:`calibration_digest`)."""
    return f"openvino/openvino_model_qint8_{calibration_digest(texts, max_length)}.xml"


def openvino_precision(int8: bool) -> dict[str, str]:
    """OpenVINO's ``ov_config`` precision for a float or a static int8 model.

    OpenVINO runs float models in bf16 on CPUs with AMX/avx512_bf16 (measured lossless for
    MiniLM on squad-it-dev). Next to int8 layers bf16 distorted some questions encoded in
    batches (cosine to the float vectors down to 0.63; right when alone), so int8 models keep
    their float parts in fp32, as NNCF calibrated them."""
    return {"INFERENCE_PRECISION_HINT": "f32"} if int8 else {}


def default_batch_size(backend: str, quantize: str | None) -> int:
    """Texts (or reranker pairs) per forward pass when the caller does not choose: 32, but 1
    for dynamic int8 ONNX.

    Dynamic quantization gives each run's activations one scale, from that run's whole padded
    batch (ONNX Runtime's ``DynamicQuantizeLinear`` is per tensor), so an output moves with the
    texts it is batched with and with their padding: ``benchmarks/check_batch_dependence.py``
    measured an encoder's vector at cosine 0.9965 to itself and a reranker's score 0.225 apart.
    One text per run makes the output a function of the text alone, so that vectors indexed in
    batches and a query encoded alone, or a pair reranked in any company, agree. On CPU it is
    also faster, as nothing is padded (docs/benchmarks.md, "Dynamic int8 ONNX: one text per
    pass"). Static int8 (OpenVINO) and float backends keep 32: they have no per-pass scale
    (OpenVINO's bf16 still rounds a little differently per batch shape: a reranker's score
    moved by 0.049 at most, measured by the same script).
    """
    return 1 if backend == "onnx" and quantize is not None else DEFAULT_BATCH_SIZE


def resolve_quantize(quantize: str | None, backend: str) -> str | None:
    """Map ``quantize`` to what the backend does: an optimum preset name for ONNX (dynamic
    int8), ``"int8"`` for OpenVINO (static int8), ``None`` for no quantization."""
    if quantize is None:
        return None
    if backend == "openvino":
        if quantize != "int8":
            raise ValueError(
                f"quantize must be None or 'int8' with backend='openvino' (static int8 "
                f"quantization with calibration); got {quantize!r}"
            )
        return "int8"
    if backend != "onnx":
        raise ValueError(
            f"quantize={quantize!r} needs backend='onnx' (dynamic int8) or backend='openvino' "
            f"(static int8), got backend={backend!r}"
        )
    if quantize == "int8":
        return cpu_quantize_config()
    if quantize in QUANTIZE_CONFIGS:
        return quantize
    raise ValueError(
        f"quantize must be None, 'int8' (preset picked for this CPU) or one of "
        f"{', '.join(QUANTIZE_CONFIGS)}; got {quantize!r}"
    )


CALIBRATION_FILE = "_calibration_it.txt"
#: bumped when the OpenVINO quantization recipe changes, so old cached files are not reused
_OV_QUANT_VERSION = "2"
SMOOTH_QUANT_ALPHA = 0.7
#: calibration texts used at most (NNCF's default subset size)
MAX_CALIBRATION = 300


def default_calibration_texts() -> list[str]:
    """The Italian calibration texts shipped with the package (one per line)."""
    from importlib.resources import files

    text = files("bertino_rag").joinpath(CALIBRATION_FILE).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def check_calibration(texts: Any) -> list[str]:
    """Validate calibration texts (a non-empty sequence of non-empty strings) and keep at most
    ``MAX_CALIBRATION`` of them, evenly spaced."""
    if isinstance(texts, str):
        raise ValueError("calibration must be a sequence of texts, not a single string")
    if not hasattr(texts, "__iter__"):
        raise ValueError(f"calibration must be a sequence of texts, got {type(texts).__name__}")
    out = list(texts)
    if not out:
        raise ValueError("calibration is empty: pass a few hundred texts like those you index")
    for i, t in enumerate(out):
        if not isinstance(t, str) or not t.strip():
            raise ValueError(f"calibration text at position {i} is empty or not a string")
    if len(out) > MAX_CALIBRATION:
        step = len(out) / MAX_CALIBRATION
        out = [out[int(i * step)] for i in range(MAX_CALIBRATION)]
    return out


def calibration_digest(texts: list[str], max_length: int) -> str:
    """Names a quantized model by its calibration texts, their length limit and the recipe."""
    h = hashlib.sha256(f"v{_OV_QUANT_VERSION}:{max_length}".encode())
    for t in texts:
        h.update(b"\0" + t.encode("utf-8"))
    return h.hexdigest()[:12]


class _DropNoise(logging.Filter):
    """Drops optimum-intel's warning that it could not tell whether a folder holds an export
    (it is told explicitly which file to load)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Could not infer whether the model was already")


@contextlib.contextmanager
def _quiet_optimum_intel() -> Iterator[None]:
    noise = _DropNoise()
    ov_logger = logging.getLogger("optimum.intel.openvino.modeling_base")
    ov_logger.addFilter(noise)
    try:
        yield
    finally:
        ov_logger.removeFilter(noise)


def _gelu_fed_matmuls(ov_model: Any) -> list[str]:
    """Names of the MatMuls that read a GELU output (the FFN down-projections).

    Their inputs are heavy-tailed, so int8 activations lose the most there; they stay float.
    """
    names = []
    for op in ov_model.get_ops():
        if op.get_type_name() != "MatMul":
            continue
        if op.input(0).get_source_output().get_node().get_type_name() == "Gelu":
            names.append(op.get_friendly_name())
    return names


def _protected(path: Path) -> bool:
    """Folders we never write into: installed packages and the Hugging Face cache."""
    roots = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    roots |= {p for p in sys.path if p.endswith(("site-packages", "dist-packages"))}
    hf_home = os.environ.get("HF_HOME") or os.path.join(Path.home(), ".cache", "huggingface")
    roots.add(hf_home)
    resolved = str(path.resolve())
    return any(resolved.startswith(str(Path(r).resolve()) + os.sep) for r in roots if r)


def _model_key(name: str) -> str:
    """A folder name for a model: hub ids as ``owner--name``; local folders by name and path."""
    if os.path.isdir(name):
        full = str(Path(name).resolve())
        digest = hashlib.sha256(full.encode("utf-8")).hexdigest()[:10]
        return f"{Path(full).name}-{digest}"
    return name.replace("/", "--")


def backend_cache_dir(name: str, backend: str) -> tuple[Path, bool]:
    """Where the exported model of ``name`` lives, and whether that is the model folder itself.

    Returns ``(folder, in_place)``: ``in_place`` means ``folder`` is the local model folder
    (the export goes to its ``<backend>/`` subfolder).
    """
    if os.path.isdir(name):
        path = Path(name)
        if os.access(path, os.W_OK) and not _protected(path):
            return path, True
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "bertino-rag")
    return root / backend / _model_key(name), False


def _local_source(name: str) -> str:
    """A local folder holding the model: ``name`` itself, or its (offline-aware) hub snapshot."""
    if os.path.isdir(name):
        return name
    from huggingface_hub import snapshot_download

    return snapshot_download(name)


def _session_options(threads: int | None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or available_cpus()
    opts.inter_op_num_threads = 1
    if os.environ.get(SPIN_ENV, "").strip() != "1":
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def _require_backend(backend: str) -> None:
    if backend == "onnx":
        missing = [m for m in ("onnxruntime", "optimum.onnxruntime") if not _has(m)]
        if missing:
            raise ImportError(
                f"backend='onnx' needs {' and '.join(missing)}: pip install 'bertino-rag[onnx]' "
                "(installs sentence-transformers[onnx]: optimum-onnx and onnxruntime)"
            )
    elif backend == "openvino":
        if not (_has("openvino") and _has("nncf") and _has("optimum.intel")):
            raise ImportError(
                "backend='openvino' needs openvino, nncf and optimum-intel: "
                "pip install 'bertino-rag[openvino]'"
            )


def _has(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _export(name: str, backend: str, folder: Path, in_place: bool, device: str | None) -> None:
    """Export ``name`` to ``backend`` and move the result into ``folder`` atomically."""
    from sentence_transformers import SentenceTransformer

    source = _local_source(name)
    logger.warning(
        "exporting %s to %s once; cached in %s%s", name, backend, folder,
        "" if in_place else " (the model folder is read-only or not local)",
    )
    with _quiet_optimum_intel():
        model = SentenceTransformer(source, device=device, backend=backend)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=folder.parent if not in_place else folder))
    try:
        model.save_pretrained(str(tmp))
        if in_place:
            (folder / backend).mkdir(exist_ok=True)
            for f in (tmp / backend).iterdir():
                os.replace(f, folder / backend / f.name)
        else:
            try:
                os.rename(tmp, folder)  # atomic; fails if another process won the race
                return
            except OSError:
                if not (folder / backend).is_dir():
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _quantize(folder: Path, preset: str, target: Path, load_kwargs: dict[str, Any]) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.backend import export_dynamic_quantized_onnx_model

    logger.warning("quantizing %s to int8 (%s) once; cached as %s", folder, preset, target)
    model = SentenceTransformer(
        str(folder), backend="onnx", model_kwargs={"file_name": "onnx/model.onnx", **load_kwargs}
    )
    tmp = Path(tempfile.mkdtemp(prefix=".quantize-", dir=folder))
    try:
        export_dynamic_quantized_onnx_model(model, preset, str(tmp))
        os.replace(tmp / "onnx" / target.name, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _quantize_openvino(
    folder: Path, target: Path, texts: list[str], load_kwargs: dict[str, Any]
) -> None:
    """Static int8 quantization of ``folder``'s OpenVINO model, calibrated on ``texts``."""
    from sentence_transformers import SentenceTransformer

    logger.warning(
        "quantizing %s to int8 (OpenVINO static, %d calibration texts) once; cached as %s",
        folder, len(texts), target,
    )
    with _quiet_optimum_intel():
        model = SentenceTransformer(
            str(folder), backend="openvino",
            model_kwargs={"file_name": "openvino/openvino_model.xml", **load_kwargs},
        )
    samples = [model.tokenizer(t, truncation=True, max_length=model.max_seq_length)
               for t in texts]
    quantize_openvino_model(model.transformers_model, samples, folder, target)


def calibration_inputs(inputs: set[str], samples: list[Any]) -> list[dict[str, Any]]:
    """The tokenizer's ``samples`` as the graph's ``inputs`` (int64 arrays, batch of one).

    A graph input the tokenizer does not give is ``token_type_ids`` when an XLM-R tokenizer
    (e5's) feeds a BERT graph: it gets zeros, as optimum-intel's own forward passes them
    (without them NNCF's calibration pass fails on the embeddings' shapes)."""
    import numpy as np

    data = []
    for enc in samples:
        sample = {k: np.asarray([v], dtype=np.int64) for k, v in enc.items() if k in inputs}
        if "token_type_ids" in inputs and "token_type_ids" not in sample:
            sample["token_type_ids"] = np.zeros_like(sample["input_ids"])
        data.append(sample)
    return data


def quantize_openvino_model(ov_model: Any, samples: list[Any], folder: Path,
                            target: Path) -> None:
    """Static int8 quantization of an optimum-intel model (an encoder's or a cross-encoder's,
    ``model.transformers_model``), calibrated on ``samples`` (its tokenizer's outputs, one
    text or pair each, unpadded: activation ranges come from real tokens only), written to
    ``target`` (``.xml`` and ``.bin``) through a temporary folder inside ``folder``."""
    import nncf
    from optimum.intel.openvino import OVConfig, OVQuantizationConfig, OVQuantizer
    from optimum.intel.openvino.quantization import OVCalibrationDataset

    data = calibration_inputs(set(ov_model.input_names), samples)
    # The FFN down-projections stay in float and SmoothQuant (alpha 0.7) evens out the other
    # MatMuls' inputs. On MiniLM this took the worst cosine to the float vectors over 64
    # squad-it-dev paragraphs from 0.985 (optimum-intel's defaults) to 0.998.
    skip = _gelu_fed_matmuls(ov_model.model)
    config = OVQuantizationConfig(
        num_samples=len(data), smooth_quant_alpha=SMOOTH_QUANT_ALPHA,
        ignored_scope={"names": skip} if skip else None,
    )
    tmp = Path(tempfile.mkdtemp(prefix=".quantize-", dir=folder))
    level = nncf.nncf_logger.level
    nncf.set_log_level(logging.WARNING)  # not one INFO line per layer left in float
    try:
        # NNCF draws its progress bars on stdout, which may be a program's output (--json)
        with contextlib.redirect_stdout(sys.stderr):
            OVQuantizer.from_pretrained(ov_model).quantize(
                OVCalibrationDataset(nncf.Dataset(data)), save_directory=str(tmp),
                ov_config=OVConfig(quantization_config=config),
            )
        # weights first: the .xml appearing is what marks the cached model as complete
        os.replace(tmp / "openvino" / "openvino_model.bin", target.with_suffix(".bin"))
        os.replace(tmp / "openvino" / "openvino_model.xml", target)
    finally:
        nncf.set_log_level(level)
        shutil.rmtree(tmp, ignore_errors=True)


def load_sentence_transformer(
    name: str,
    *,
    backend: str = "torch",
    quantize: str | None = None,
    device: str | None = None,
    threads: int | None = None,
    model_kwargs: dict[str, Any] | None = None,
    calibration: Any = None,
) -> tuple[Any, Path | None]:
    """Load ``name`` on ``backend``; returns the model and the exported file (``None`` for torch).

    ``calibration``: texts for OpenVINO's static int8 quantization (default: the shipped
    Italian set); only used with ``backend="openvino", quantize="int8"``.

    Raises:
        ValueError: an unknown backend or quantize value.
        ImportError: the backend's runtime is not installed (names what to install).
    """
    from sentence_transformers import SentenceTransformer

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    preset = resolve_quantize(quantize, backend)
    threads = resolve_threads(threads)
    kwargs = dict(model_kwargs or {})
    if backend == "torch":
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        return SentenceTransformer(name, device=device, model_kwargs=kwargs or None), None

    _require_backend(backend)
    folder, in_place = backend_cache_dir(name, backend)
    if backend == "onnx":
        kwargs.setdefault("session_options", _session_options(threads))
        if device in (None, "cpu"):
            kwargs.setdefault("provider", "CPUExecutionProvider")
        base = folder / "onnx" / "model.onnx"
        if not base.exists():
            _export(name, backend, folder, in_place, device)
        target = base
        if preset is not None:
            target = folder / "onnx" / quantized_onnx_file(preset)
            if not target.exists():
                _quantize(folder, preset, target, {"provider": "CPUExecutionProvider"})
    else:
        # ``model_kwargs={"ov_config": {...}}`` overrides
        ov_config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads or available_cpus(),
                                     **openvino_precision(preset is not None)}
        kwargs["ov_config"] = {**ov_config, **(kwargs.get("ov_config") or {})}
        # bad calibration texts fail before anything is exported
        texts = None if preset is None else check_calibration(
            default_calibration_texts() if calibration is None else calibration
        )
        base = folder / "openvino" / "openvino_model.xml"
        if not base.exists():
            _export(name, backend, folder, in_place, device)
        target = base
        if texts is not None:
            target = folder / quantized_openvino_file(texts, _max_seq_length(folder))
            if not target.exists():
                _quantize_openvino(folder, target, texts, {"ov_config": kwargs["ov_config"]})
    kwargs["file_name"] = str(target.relative_to(folder))
    with _quiet_optimum_intel():
        model = SentenceTransformer(
            str(folder), device=device, backend=backend, model_kwargs=kwargs
        )
    return model, target


def _max_seq_length(folder: Path) -> int:
    """The sentence-transformers max_seq_length saved in ``folder`` (0 when not stated)."""
    import json

    cfg = folder / "sentence_bert_config.json"
    try:
        return int(json.loads(cfg.read_text(encoding="utf-8")).get("max_seq_length") or 0)
    except (OSError, ValueError):
        return 0
