"""The search funnel: a request validated once, run as stages over any store.

:mod:`.request` (what a search asks), :mod:`.funnel` (the plan of stages), one module per
stage (:mod:`.rescore`, :mod:`.fusion`, :mod:`.grouping`, :mod:`.expand`), the filter
language (:mod:`.filters`) and the funnel's currency between stages (:mod:`.ranked`).
"""

from __future__ import annotations

from .fusion import FUSION_METHODS, Fusion
from .ranked import Fetched, Ranked, ranking_key
from .request import MODES, Queries, SearchRequest

__all__ = ["FUSION_METHODS", "MODES", "Fetched", "Fusion", "Queries", "Ranked",
           "SearchRequest", "ranking_key"]
