"""Command line: ``bertino-rag index | search | eval | train | export-e5 | serve |
migrate``.

:mod:`.main` builds the parser and runs a subcommand; :mod:`.common` holds the flags every
subcommand shares; each other module registers one subcommand.
"""

from __future__ import annotations

from .main import build_parser, main

__all__ = ["build_parser", "main"]
