"""Pack a sentence-transformers model as a float16 copy (half the bytes, to travel to the GPU
machine) and unpack it there as float32 (the precision training starts from).

Usage:
    python benchmarks/gpu_model.py pack SRC DST     # float16 copy (all-MiniLM-L6-v2: ~44 MB)
    python benchmarks/gpu_model.py unpack SRC DST   # float32 again
"""

from __future__ import annotations

import sys


def main(action: str, src: str, dst: str) -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(src, device="cpu")
    model.to(torch.float16 if action == "pack" else torch.float32)
    model.save(dst)
    dtypes = {p.dtype for p in model.parameters()}
    print(f"{action}: {src} -> {dst} ({', '.join(map(str, dtypes))})")


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("pack", "unpack"):
        sys.exit(__doc__)
    main(*sys.argv[1:])
