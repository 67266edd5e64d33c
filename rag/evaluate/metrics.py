"""Retrieval, answer and citation metrics. Relevance is judged by evidence containment, not chunk ids."""

from __future__ import annotations

import math
from difflib import SequenceMatcher

from rag.answer.wording import CITATION

from .dataset import compact

PARTIAL = 0.6  # an evidence passage cut by a chunk boundary counts where >= 60% of it lies


def covers(chunk_text: str, evidence: str) -> bool:
    c, e = compact(chunk_text), compact(evidence)
    if not e:
        return False
    if e in c:
        return True
    m = SequenceMatcher(None, c, e, autojunk=False).find_longest_match(0, len(c), 0, len(e))
    return m.size >= max(8, PARTIAL * len(e))


def relevance(texts: list[str], evidence: list[str]) -> list[set[int]]:
    """For each retrieved text, the indices of the evidence passages it covers."""
    return [{j for j, e in enumerate(evidence) if covers(t, e)} for t in texts]


def retrieval_metrics(rel: list[set[int]], n_evidence: int, ks=(1, 3, 5, 10)) -> dict[str, float]:
    first = next((r for r, s in enumerate(rel, 1) if s), None)
    out = {f"hit@{k}": float(first is not None and first <= k) for k in ks}
    out["mrr"] = 1.0 / first if first and first <= 10 else 0.0
    seen: set[int] = set()
    dcg = 0.0
    for r, s in enumerate(rel[:10], 1):
        new = s - seen
        if new:
            dcg += 1.0 / math.log2(r + 1)
            seen |= new
    ideal = sum(1.0 / math.log2(r + 1) for r in range(1, min(n_evidence, 10) + 1))
    out["ndcg@10"] = dcg / ideal if ideal else 0.0
    return out


def char_f1(pred: str, gold: str) -> float:
    p, g = list(compact(pred)), list(compact(gold))
    if not p or not g:
        return float(p == g)
    common: dict[str, int] = {}
    for ch in g:
        common[ch] = common.get(ch, 0) + 1
    same = 0
    for ch in p:
        if common.get(ch, 0) > 0:
            same += 1
            common[ch] -= 1
    if same == 0:
        return 0.0
    prec, rec = same / len(p), same / len(g)
    return 2 * prec * rec / (prec + rec)


def rouge_l(pred: str, gold: str) -> float:
    p, g = compact(pred), compact(gold)
    if not p or not g:
        return float(p == g)
    prev = [0] * (len(g) + 1)
    for a in p:
        cur = [0]
        for j, b in enumerate(g, 1):
            cur.append(prev[j - 1] + 1 if a == b else max(prev[j], cur[j - 1]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    prec, rec = lcs / len(p), lcs / len(g)
    return 2 * prec * rec / (prec + rec)




def contains_all(answer: str, keys: list[str]) -> bool:
    """Every key is in the answer, its [n] citation markers removed: "害虫[1]。" states "害虫。"."""
    a = compact(CITATION.sub("", answer))
    return all(compact(k) in a for k in keys)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    v = sorted(values)
    i = (len(v) - 1) * q
    lo, hi = math.floor(i), math.ceil(i)
    return v[lo] + (v[hi] - v[lo]) * (i - lo)
