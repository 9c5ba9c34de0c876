"""Loaders for the data formats the library reads: BEIR folders, STS csv, txt and jsonl."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["BeirData", "StsPair", "iter_documents", "load_beir", "load_sts", "read_jsonl"]


@dataclass
class BeirData:
    """A BEIR retrieval set.

    Attributes:
        corpus: ``{doc_id: {"title": str, "text": str}}``.
        queries: ``{query_id: text}``.
        qrels: ``{query_id: {doc_id: relevance}}`` (relevance > 0 only).
    """

    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)

    def document_text(self, doc_id: str, with_title: bool = False) -> str:
        """The text embedded for a document: its text, or "title\\ntext" with ``with_title``."""
        doc = self.corpus[doc_id]
        if with_title and doc.get("title"):
            return f"{doc['title']}\n{doc['text']}"
        return doc["text"]


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of a ``.jsonl`` file, one a line (blank lines skipped).

    Raises:
        ValueError: a line that is not a JSON object (file and line number named).
    """
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n}: not valid JSON ({err.msg})") from err
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{n}: expected a JSON object")
            yield row


def load_beir(folder: str | Path, split: str = "test") -> BeirData:
    """Load ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv`` from a BEIR folder.

    Raises:
        FileNotFoundError: a required file is missing (named).
        ValueError: a malformed line (file and line number named).
    """
    folder = Path(folder)
    corpus_path = folder / "corpus.jsonl"
    if not corpus_path.exists():
        raise FileNotFoundError(f"{folder} is not a BEIR folder: {corpus_path.name} is missing")
    corpus: dict[str, dict[str, str]] = {}
    for row in read_jsonl(corpus_path):
        corpus[str(row["_id"])] = {"title": str(row.get("title") or ""), "text": str(row["text"])}
    queries: dict[str, str] = {}
    queries_path = folder / "queries.jsonl"
    if queries_path.exists():
        queries = {str(r["_id"]): str(r["text"]) for r in read_jsonl(queries_path)}
    qrels: dict[str, dict[str, int]] = {}
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if qrels_path.exists():
        with open(qrels_path, encoding="utf-8") as fh:
            reader = csv.reader(fh, delimiter="\t")
            for n, cells in enumerate(reader, 1):
                if not cells or (n == 1 and cells[0] == "query-id"):
                    continue
                if len(cells) < 3:
                    raise ValueError(f"{qrels_path}:{n}: expected query-id, corpus-id, score")
                score = int(float(cells[2]))
                if score > 0:
                    qrels.setdefault(cells[0], {})[cells[1]] = score
    return BeirData(corpus=corpus, queries=queries, qrels=qrels)


@dataclass(frozen=True)
class StsPair:
    sentence1: str
    sentence2: str
    score: float  # as in the file (STS-B: 0..5)


def load_sts(path: str | Path) -> list[StsPair]:
    """Read an STS csv (``sentence1,sentence2,score``; a header row is skipped)."""
    pairs: list[StsPair] = []
    with open(path, encoding="utf-8", newline="") as fh:
        for n, row in enumerate(csv.reader(fh), 1):
            if not row:
                continue
            if len(row) != 3:
                raise ValueError(f"{path}:{n}: expected 3 columns (sentence1,sentence2,score)")
            try:
                score = float(row[2])
            except ValueError:
                if n == 1:
                    continue  # header
                raise ValueError(f"{path}:{n}: score {row[2]!r} is not a number") from None
            pairs.append(StsPair(row[0], row[1], score))
    if not pairs:
        raise ValueError(f"{path}: no STS pairs found")
    return pairs


def iter_documents(path: str | Path, *, with_title: bool = False) -> Iterator[dict[str, Any]]:
    """Documents from a ``.txt`` file (one per non-empty line), a ``.jsonl`` file (``text``,
    optional ``id``/``metadata``) or a BEIR folder (id, text, and the title as metadata)."""
    path = Path(path)
    if path.is_dir():
        data = load_beir(path)
        for doc_id, doc in data.corpus.items():
            yield {
                "id": doc_id,
                "text": data.document_text(doc_id, with_title=with_title),
                "metadata": {"title": doc["title"]} if doc.get("title") else {},
            }
    elif path.suffix == ".jsonl":
        for n, row in enumerate(read_jsonl(path), 1):
            if "text" not in row:
                raise ValueError(f"{path}:{n}: missing 'text'")
            yield {"text": row["text"], "id": row.get("id", row.get("_id")),
                   "metadata": row.get("metadata") or {}}
    elif path.suffix in (".txt", ".md", ""):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield {"text": line.rstrip("\n")}
    else:
        raise ValueError(f"{path}: unsupported input (use a .txt, a .jsonl or a BEIR folder)")
