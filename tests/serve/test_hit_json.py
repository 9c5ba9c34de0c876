"""The service writes hits as JSON without copying them; the JSON is asdict's."""

from __future__ import annotations

import dataclasses
import json

import pytest

pytest.importorskip("fastapi")

from bertino_rag.serve.app import _hit_dict  # noqa: E402
from bertino_rag.types import Hit  # noqa: E402


def test_hit_json_equals_the_dataclass_fields_with_grouped_chunks():
    chunk = Hit(id="doc#1", text="una parte", score=0.7, metadata={"doc_id": "doc", "n": [1]})
    hit = Hit(id="doc", text="una parte", score=0.7, metadata={"title": "Roma", "tags": ["a"]},
              chunks=(chunk, Hit(id="doc#2", text="altra", score=0.5)))
    assert json.dumps(_hit_dict(hit), sort_keys=True) == json.dumps(
        dataclasses.asdict(hit), sort_keys=True)
    plain = Hit(id="x", text="t", score=0.1)
    assert _hit_dict(plain) == dataclasses.asdict(plain) | {"chunks": []}
