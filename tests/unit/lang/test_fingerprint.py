"""rag.lang.fingerprint: an index records the rule tables that built it; a changed table changes it."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import PROJECT_ROOT

from rag.lang import fingerprint, lists, sentences


def test_a_changed_table_changes_the_fingerprint(monkeypatch):
    before = fingerprint(lists, sentences)
    assert fingerprint(lists, sentences) == before
    monkeypatch.setattr(sentences, "TERMINAL", sentences.TERMINAL + "．")
    assert fingerprint(lists, sentences) != before
    monkeypatch.undo()
    assert fingerprint(lists, sentences) == before


def test_functions_are_not_tables(monkeypatch):
    before = fingerprint(sentences)
    monkeypatch.setattr(sentences, "ends_sentence", lambda text: True)
    assert fingerprint(sentences) == before


def test_stable_across_processes():
    """Sets are hashed in sorted order: Python's string-hash randomisation must not rebuild an index."""
    code = "from rag.ingest.chunking import CHUNKER_VERSION as c; from rag.index.tokenizer import signature; print(c, signature())"
    seen = {subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(seen) == 1
