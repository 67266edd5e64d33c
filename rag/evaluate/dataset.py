"""Q&A datasets: JSONL (one object per line), CSV or XLSX with the same columns.

The loader lives in rag/ingest/qa_pairs.py (the FAQ pairs use it too); it is re-exported here so
`from rag.evaluate.dataset import Item, load_dataset` works. Evidence checks are eval-only."""

from __future__ import annotations

from rag.ingest.qa_pairs import LIST_FIELDS, Item, load_dataset
from rag.lang.text import normalize

__all__ = ["LIST_FIELDS", "Item", "check_evidence", "compact", "load_dataset"]


def compact(text: str) -> str:
    """Form used for evidence matching: NFKC, no whitespace, no markdown emphasis."""
    return "".join(normalize(text.replace("**", "")).split())


def check_evidence(items: list[Item], corpus_texts: dict[str, str]) -> list[str]:
    """Problems with evidence that no longer occurs in the corpus (documents change)."""
    problems = []
    docs = {k: compact(v) for k, v in corpus_texts.items()}
    everything = "\n".join(docs.values())
    for it in items:
        for n, ev in enumerate(it.evidence):
            src = it.source[n] if n < len(it.source) else None
            where = docs.get(src) if src else None
            if where is None and src:
                problems.append(f"{it.id}: 来源文件不存在：{src}")
                where = everything
            if compact(ev) not in (where or everything):
                problems.append(f"{it.id}: 证据不在语料中：{ev[:40]}…")
    return problems
