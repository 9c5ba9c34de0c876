"""The embedded default store: exact numpy search, in memory or persisted to a folder.

Layout of ``MemoryStore(path=DIR)``, one folder per collection (``DIR/<collection>/``):

- ``seg-NNNNNN.index.npy``: index vectors, float32, one file per written segment;
- ``seg-NNNNNN.full.npy``: full vectors, float16 (only when the collection keeps them);
- ``seg-NNNNNN.sign.npy``: sign codes of the index vectors, uint64 words (written by a store
  with ``first_stage="binary"``, :mod:`.binary`);
- ``meta.sqlite``: the stamp, the list of live segments with their sizes and CRC-32
  checksums, the segments whose files may be deleted, and, per document, its id, segment, row,
  text and metadata (JSON); for a hybrid collection, the lexical vocabulary (term → id). No
  pickle anywhere;
- ``meta.acked``: the generation of the last acknowledged write, fsynced before the write
  returns, so that a lost or garbled ``meta.sqlite-wal`` that undid acknowledged writes is
  refused at the next open (:meth:`MemoryStore._record_generation`);
- ``seg-NNNNNN.lex*.npy``: a hybrid collection's postings of the segment's rows
  (:mod:`._postings`), written and made live with the vectors; their sizes and CRC-32s are
  in ``segments.lex_sums`` and checked like the vectors'.

Writers in several processes take turns on the folder's ``.lock`` file; readers in other
processes see new data at their next call. Segments are memory-mapped and searched in chunks, so a
million vectors need no more RAM than the page cache gives them; small segments are merged
in size tiers, which keeps the number of files logarithmic in the corpus size.
"""

from __future__ import annotations

from .store import MemoryStore

__all__ = ["MemoryStore"]
