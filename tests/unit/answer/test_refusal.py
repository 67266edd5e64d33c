"""The refusal threshold chosen in the product's documents (rag/answer/refusal.py): used only for the
reading model it was chosen for."""

from __future__ import annotations

import json

from rag.answer import refusal


def test_threshold_only_for_its_own_reading_model(tmp_path):
    p = tmp_path / "refusal.json"
    p.write_text(json.dumps({"threshold": 0.08, "reader_sha256": "abc"}), encoding="utf-8")
    assert refusal.calibrated("abc", p) == 0.08
    assert refusal.calibrated("another", p) is None  # a retrained model: its own threshold, not this one
    assert refusal.calibrated("abc", tmp_path / "missing.json") is None
    p.write_text("{not json", encoding="utf-8")
    assert refusal.calibrated("abc", p) is None


def test_the_shipped_record_is_complete():
    r = json.loads(refusal.DEFAULT_PATH.read_text(encoding="utf-8"))
    assert 0 < r["threshold"] < 1 and len(r["reader_sha256"]) == 64
    at = next(c for c in r["curve"] if c["threshold"] == r["threshold"])
    assert at["answerable_refused"] <= 0.05  # the rule it was chosen by
    assert r["counts"]["unanswerable"] > 0 and r["commit"]
