"""Milvus store: embedded Milvus Lite (a ``.db`` path) or a Milvus server, on the store protocol.

One file per engine concern: :mod:`.store` (:class:`MilvusStore`: connection, lifecycle,
writes, reads), :mod:`.search` (k-nearest, BM25, grouping search), :mod:`.schema` (the fields,
indexes and stamp of a collection), :mod:`.catalogue` (index types, their parameters and
fallbacks), :mod:`.lite` (the Milvus Lite process: users per file, keepalive) and
:mod:`.filters` (the injection-safe filter compiler).

Schema of a collection (one entity per document):

- ``id``: VARCHAR primary key, the document id (at most 512 UTF-8 bytes);
- ``vector``: FLOAT_VECTOR of ``index_dim``, the searched (truncated) vectors, with the chosen
  index and metric IP (COSINE when the stamp says vectors are not normalized);
- ``full_vector`` (only with ``stamp.full_vectors``): the full vectors, FLOAT16_VECTOR where the
  engine has it, else FLOAT_VECTOR holding float16-rounded values (Milvus Lite 3.2 has no
  float16 vectors). Rescoring therefore uses float16 full vectors everywhere, as MemoryStore
  does. Servers index it with FLAT (needed to load); Milvus Lite needs no index on it;
- ``text``: VARCHAR (at most 65,535 UTF-8 bytes; longer texts are rejected before writing:
  split them, the encoder would embed only their beginning anyway);
- ``metadata``: JSON, returned as stored;
- ``filter_keys``: JSON, a typed copy of the scalar metadata that filters read
  (see :mod:`.filters`);
- ``id_hex``: VARCHAR, the hex of the id, for id lookups on engines without filter templating;
- ``lexical_text`` and ``lexical`` (only for a hybrid collection, ``Stamp.lexical`` set): the
  document's terms from the library's analyzer, each written as
  :func:`~bertino_rag.lexical.term_token` (a word Milvus's ``standard`` tokenizer keeps whole),
  and the SPARSE_FLOAT_VECTOR Milvus's BM25 function derives from them, indexed
  ``SPARSE_INVERTED_INDEX`` with metric ``BM25`` and the stamp's ``k1`` and ``b``;
- ``document``: VARCHAR, the document an entity belongs to (its chunk's ``doc_id`` metadata,
  else its own id): the ``group_by_field`` of Milvus's grouping search, which serves
  single-stage dense ``group_by="document"`` (capability ``grouping``). Collections created
  before it have no such field and are grouped by the funnel's generic stage.

Lexical search is Milvus's own BM25 on the library's terms: Milvus keeps the statistics (live
``N``, average length, document frequencies) and scores with Lucene's formula, so scores are
exact, as MemoryStore's (divided by ``k1 + 1``, the constant MemoryStore's and bm25s's Lucene
variant leave out). Measured on Milvus Lite 3.2: the BM25 function, the sparse index and
``hybrid_search`` work; a ``whitespace`` tokenizer does not exist there (hence the tokens).
Hybrid search is the funnel's: both sides' candidates, rescored with full vectors, fused with
the library's :class:`~bertino_rag.search.fusion.Fusion` (Milvus's rankers, RRF and weighted
arctan-normalized scores, return only fused scores).

Searches return ids and scores only; the funnel reads the documents of the final hits in one
query per block. A search call carries at most the hits that fit in one gRPC response (32 MiB)
and asks for at most Milvus's 16,384 hits per query. ``open_replacement`` builds beside the
live collection and renames at ``publish`` (``atomic_replace``). Every client call goes
through one :class:`~bertino_rag.stores.retry.Retry`; a failed write raises
:class:`~bertino_rag.errors.StoreWriteError` naming the ids not stored.

The :class:`~bertino_rag.types.Stamp` lives in the collection's properties (and description)
and is checked on open. Values from users never enter a filter expression: filters use filter
templating, or closed-alphabet literals on Milvus Lite, which has no templating. Id lookups
use templating, or on Milvus Lite the one form it answers by primary key, ``id in [...]``,
each id written as a string of Lite's tokenizer (:func:`.filters.ids_filter`; tested on
hostile ids against Lite's own parser).
"""

from __future__ import annotations

from ...errors import IndexFallbackWarning
from .catalogue import FALLBACKS
from .lite import LITE_KEEPALIVE, check_uri
from .schema import ID_MAX_BYTES, TEXT_MAX_BYTES
from .search import MAX_LIMIT
from .store import MilvusStore

__all__ = ["FALLBACKS", "ID_MAX_BYTES", "IndexFallbackWarning", "LITE_KEEPALIVE", "MAX_LIMIT",
           "MilvusStore", "TEXT_MAX_BYTES", "check_uri"]
