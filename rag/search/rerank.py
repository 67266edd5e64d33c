"""Reranking by the reading model: each fused passage is read with the question; the relevance logit plus
a prior from the fused position (`weight` × -ln(1 + position)) orders them within their structural tier
(`structure.Tiers`: the article or definition the question names first, a superseded version it did not
ask for last), which is logic no score overrides. The readings and tiers stay on the hits, so the answer
stage reuses them instead of reading the passages again."""

from __future__ import annotations

import math

from rag.models import Hit


def rerank(reader, question: str, hits: list[Hit], k: int, weight: float, tiers: list[int] | None = None) -> list[Hit]:
    """The k best of `hits` (fused order) by tier, then by the reader; each returned hit carries its
    `reading` and `tier`."""
    if not hits:
        return hits
    readings = reader.read(question, [h.chunk.text for h in hits])
    tiers = tiers or [0] * len(hits)
    for h, r, t in zip(hits, readings, tiers):
        h.reading, h.tier = r, t
    key = [(tiers[i], -(r.relevance - weight * math.log1p(i))) for i, r in enumerate(readings)]
    order = sorted(range(len(hits)), key=lambda i: key[i])[:k]
    out = [hits[i] for i in order]
    for n, h in enumerate(out, 1):
        h.rank = n
    return out
