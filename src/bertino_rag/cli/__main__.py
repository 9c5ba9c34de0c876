"""``python -m bertino_rag.cli``: the ``bertino-rag`` command."""

from __future__ import annotations

import sys

from .main import main

sys.exit(main())
