"""The layout of a MilvusStore collection: its fields, its indexes, its stamp and its entities
(see the package docstring for what each field holds and why)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ...errors import StoreError
from ...indexing.documents import document_of
from ...lexical import term_token
from ...types import Document, Stamp
from ..base import lexical_config
from .filters import FILTER_FIELD, filter_keys

__all__ = ["COMPLETE", "GROUP_FIELD", "ID_MAX_BYTES", "LEXICAL", "LEXICAL_TEXT", "REPLACING",
           "STAMP_KEY", "TEXT_MAX_BYTES", "decode_full", "entities", "index_params", "read_stamp",
           "schema", "stamp_properties"]

STAMP_KEY = "bertino.stamp"
#: the collection property holding the intent record of chunked edits (stores/intent.py)
INTENT_KEY = "bertino.intent"
LEXICAL = "lexical"
LEXICAL_TEXT = "lexical_text"
#: the scalar field of the document an entity belongs to (the group key of grouped search)
GROUP_FIELD = "document"
ID_MAX_BYTES = 512
TEXT_MAX_BYTES = 65_535
#: suffix of the collection a replacement is built in (``open_replacement``)
REPLACING = "__bertino_replacing"
#: suffix a complete replacement is renamed to before the old collection is dropped: a crash
#: between the drop and the last rename leaves it under this name, and the next open finishes
#: the swap (a ``REPLACING`` collection is never complete, and is dropped)
COMPLETE = "__bertino_complete"
_DESCRIPTION = "bertino-rag collection; stamp: "


def schema(client: Any, pymilvus: Any, stamp: Stamp, full_dtype: Any) -> Any:
    """The fields of a collection built with ``stamp`` (full vectors as ``full_dtype``), and
    for a hybrid collection Milvus's BM25 function over the analyzer's terms."""
    dt = pymilvus.DataType
    s = client.create_schema(auto_id=False, enable_dynamic_field=False)
    s.add_field("id", dt.VARCHAR, is_primary=True, max_length=ID_MAX_BYTES)
    s.add_field("vector", dt.FLOAT_VECTOR, dim=stamp.index_dim)
    if stamp.full_vectors:
        s.add_field("full_vector", full_dtype, dim=stamp.full_dim)
    s.add_field("text", dt.VARCHAR, max_length=TEXT_MAX_BYTES)
    s.add_field("metadata", dt.JSON)
    s.add_field(FILTER_FIELD, dt.JSON)
    s.add_field("id_hex", dt.VARCHAR, max_length=2 * ID_MAX_BYTES)
    s.add_field(GROUP_FIELD, dt.VARCHAR, max_length=ID_MAX_BYTES)
    if stamp.lexical is not None:
        s.add_field(LEXICAL_TEXT, dt.VARCHAR, max_length=TEXT_MAX_BYTES,
                    enable_analyzer=True, analyzer_params={"tokenizer": "standard"})
        s.add_field(LEXICAL, dt.SPARSE_FLOAT_VECTOR)
        s.add_function(pymilvus.Function(
            name="bertino_bm25", function_type=pymilvus.FunctionType.BM25,
            input_field_names=[LEXICAL_TEXT], output_field_names=[LEXICAL]))
    return s


def index_params(client: Any, stamp: Stamp, index: str, metric: str, params: dict[str, Any],
                 lite: bool) -> Any:
    """The indexes of a collection: ``index`` on the searched vectors, FLAT on the full vectors
    of a server (needed to load; Milvus Lite needs none), and the BM25 sparse index with the
    stamp's ``k1`` and ``b``."""
    out = client.prepare_index_params()
    # Milvus Lite reads build parameters from one JSON "params" entry only; pymilvus 3 sends
    # them flat, which servers read.
    out.add_index("vector", index_type=index, metric_type=metric,
                  params={"params": params} if lite else params)
    if stamp.full_vectors and not lite:
        out.add_index("full_vector", index_type="FLAT", metric_type="IP")
    if stamp.lexical is not None:
        bm25 = lexical_config(stamp.lexical)[1]
        out.add_index(LEXICAL, index_type="SPARSE_INVERTED_INDEX", metric_type="BM25",
                      params={"bm25_k1": bm25.k1, "bm25_b": bm25.b})
    return out


def stamp_properties(stamp: Stamp) -> dict[str, Any]:
    """The ``create_collection`` arguments that store the stamp (in the properties, and in the
    description for engines that keep no properties)."""
    text = json.dumps(stamp.to_dict(), sort_keys=True)
    return {"properties": {STAMP_KEY: text}, "description": _DESCRIPTION + text}


def read_stamp(desc: dict[str, Any], collection: str, where: str) -> Stamp:
    """The stamp of a described collection.

    Raises:
        StoreError: the collection was not created by bertino-rag.
    """
    raw = (desc.get("properties") or {}).get(STAMP_KEY)
    description = str(desc.get("description") or "")
    if raw is None and description.startswith(_DESCRIPTION):
        raw = description[len(_DESCRIPTION):]
    if raw is None:
        raise StoreError(
            f"collection {collection!r} in {where} was not created by bertino-rag (it has no "
            "model stamp); use another collection name, or recreate=True to drop it"
        )
    return Stamp.from_dict(json.loads(raw))


def _lexical_texts(documents: list[Document], terms: list[dict[str, int]]) -> list[str]:
    """Each document's terms as the words Milvus's BM25 function counts; refused before any
    write when a document has more terms than the field holds."""
    texts = []
    for d, counts in zip(documents, terms, strict=True):
        text = " ".join(term_token(t) for t, c in counts.items() for _ in range(c))
        if len(text) > TEXT_MAX_BYTES:
            raise ValueError(
                f"document {d.id!r} has {sum(counts.values())} terms, more than a Milvus "
                f"lexical field holds ({(TEXT_MAX_BYTES + 1) // 10}); split it into chunks "
                "(Retriever chunks long documents by default)"
            )
        texts.append(text)
    return texts


def entities(documents: list[Document], vectors: np.ndarray, full: np.ndarray | None,
             terms: list[dict[str, int]] | None, *, float16: bool, grouped: bool
             ) -> list[dict[str, Any]]:
    """The entities of validated documents: full vectors rounded to float16 (held as float32
    where the field is a FLOAT_VECTOR), the typed filter keys, the hex id, the document (when
    the collection has the field) and the analyzed terms of a hybrid collection."""
    half = None
    if full is not None:
        half = np.asarray(full, dtype=np.float16)
        if not float16:
            half = half.astype(np.float32)
    lexical = None if terms is None else _lexical_texts(documents, terms)
    rows = []
    for i, d in enumerate(documents):
        row = {"id": d.id, "vector": vectors[i], "text": d.text, "metadata": d.metadata,
               FILTER_FIELD: filter_keys(d.metadata), "id_hex": d.id.encode("utf-8").hex()}
        if half is not None:
            row["full_vector"] = half[i]
        if grouped:
            row[GROUP_FIELD] = document_of(d.id, d.metadata)
        if lexical is not None:
            row[LEXICAL_TEXT] = lexical[i]
        rows.append(row)
    return rows


def decode_full(value: Any) -> np.ndarray:
    """A stored full vector as float32 (FLOAT16_VECTOR fields come back as bytes)."""
    if isinstance(value, (bytes, bytearray)):
        return np.frombuffer(value, dtype=np.float16).astype(np.float32)
    if isinstance(value, list) and value and isinstance(value[0], (bytes, bytearray)):
        return np.frombuffer(value[0], dtype=np.float16).astype(np.float32)
    return np.asarray(value, dtype=np.float32)
