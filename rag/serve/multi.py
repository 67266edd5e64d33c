"""A question over several knowledge bases: each base answers from its own index, the best-supported
answer is given, and the passages shown are fused across the bases (RRF over each base's ranks)."""

from __future__ import annotations

from dataclasses import replace

from rag.models import Answer, Hit
from rag.search.fusion import rrf
from rag.serve.kbs import KB, Registry

def fuse(per_base: list[tuple[KB, list[Hit]]], k: int) -> list[tuple[KB, Hit]]:
    """The bases' passages in one list by reciprocal-rank fusion (the retriever's own `rrf`)."""
    flat = [(kb, h) for kb, hits in per_base for h in sorted(hits, key=lambda h: h.rank)]
    rankings, start = [], 0
    for _, hits in per_base:
        rankings.append(list(range(start, start + len(hits))))
        start += len(hits)
    return [(flat[i][0], replace(flat[i][1], rank=n + 1, score=s)) for n, (i, s) in enumerate(rrf(rankings)[:k])]


def ask_many(registry: Registry, bases: list[KB], question: str, history: list, **kw) -> tuple[Answer, KB, list[tuple[KB, Hit]]]:
    """The answer of the base whose passages best support one (the answerability probability; a refusal
    loses to any answer), that base, and the fused passages of all bases."""
    answers = [(registry.assistant(kb).ask(question, history, **kw), kb) for kb in bases]
    best, kb = max(answers, key=lambda x: (not x[0].refused, x[0].evidence))
    fused = fuse([(b, a.retrieved) for a, b in answers], max(len(best.retrieved), 5))
    return best, kb, fused
