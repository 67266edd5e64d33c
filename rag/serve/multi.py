"""A question over several knowledge bases: each base answers from its own index, the best-supported
answer is given, and the passages shown are fused across the bases (RRF over each base's ranks)."""

from __future__ import annotations

from dataclasses import replace

from rag.models import Answer, Hit
from rag.serve.kbs import KB, Registry

RRF_K = 60


def fuse(per_base: list[tuple[KB, list[Hit]]], k: int) -> list[tuple[KB, Hit]]:
    scored = [(1.0 / (RRF_K + h.rank), kb, h) for kb, hits in per_base for h in hits]
    scored.sort(key=lambda x: -x[0])
    return [(kb, replace(h, rank=i + 1, score=s)) for i, (s, kb, h) in enumerate(scored[:k])]


def ask_many(registry: Registry, bases: list[KB], question: str, history: list, **kw) -> tuple[Answer, KB, list[tuple[KB, Hit]]]:
    """The answer of the base whose passages best support one (the answerability probability; a refusal
    loses to any answer), that base, and the fused passages of all bases."""
    answers = [(registry.assistant(kb).ask(question, history, **kw), kb) for kb in bases]
    best, kb = max(answers, key=lambda x: (not x[0].refused, x[0].evidence))
    fused = fuse([(b, a.retrieved) for a, b in answers], max(len(best.retrieved), 5))
    return best, kb, fused
