"""``python -m bertino_rag.training --config FILE [--flag value ...]``."""

from __future__ import annotations

import sys

from ..cli.train import main

if __name__ == "__main__":
    sys.exit(main())
