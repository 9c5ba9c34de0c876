"""The quickstart example runs end to end on real weights."""

from __future__ import annotations

import os
import subprocess
import sys

from .conftest import REPO


def test_quickstart_runs(minilm_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, str(REPO / "examples" / "quickstart.py"), "--model", minilm_path],
        capture_output=True, text=True, timeout=300, env=env, check=True,
    ).stdout
    # a folder of seven files; the long article is stored as chunks, one hit per document
    assert "indexed 7 documents from" in out and "1 cut into chunks" in out
    first_hits = [block.splitlines()[1] for block in out.split("? ")[1:]]
    assert "arte/gioconda.md:" in first_hits[0] and "cucina/pizza.md:" in first_hits[1]
    assert "geografia/etna.txt:" in first_hits[2]
    assert "storia/firenze.md, chunk 1:" in first_hits[3]
    answers = [[line for line in block.splitlines()[1:] if line.strip()]
               for block in out.split("? ")[1:-1]]
    assert all(len(lines) == len({line.split(":")[0] for line in lines}) for lines in answers)
    assert "(filter: the files of arte/)" in out
    arte = out.split("(filter: the files of arte/)")[1].strip().splitlines()
    assert len(arte) == 2 and "La Gioconda:" in arte[0] and "sistina:" in arte[1]
