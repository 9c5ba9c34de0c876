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
    assert "indexed 7 documents" in out
    first_hits = [block.splitlines()[1] for block in out.split("? ")[1:]]
    assert "Gioconda" in first_hits[0] and "pizza" in first_hits[1] and "Etna" in first_hits[2]
    assert "(filter: tema=arte)" in out
