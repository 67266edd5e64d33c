"""Check each cited sentence of a generated answer against its cited passage; re-point or drop citations."""

from __future__ import annotations

import re

from .answer import Citation
from .cleaning import normalize
from .models import Hit

_MARK = re.compile(r"\[(\d+)\]")
_PIECE = re.compile(r"[^。！？!?\n]*(?:\[\d+\])*[。！？!?]?(?:\[\d+\])*")
_NUM = re.compile(r"\d+(?:\.\d+)?")
SUPPORTED = 0.5


def support(sentence: str, passage: str) -> float:
    """Share of the sentence's character bigrams found in the passage; 0 if a number is missing."""
    s = "".join(normalize(_MARK.sub("", sentence)).split())
    p = "".join(normalize(passage.replace("**", "")).split())
    if not s:
        return 1.0
    for n in _NUM.findall(s):
        if n not in p:
            return 0.0  # a figure the passage does not state is never supported
    grams = {s[i : i + 2] for i in range(len(s) - 1)} or {s}
    return sum(g in p for g in grams) / len(grams)


def verify_citations(text: str, hits: list[Hit]) -> tuple[str, list[Citation]]:
    """Return the answer with citations renumbered to the passages that support each sentence."""
    pieces = [p for p in _PIECE.findall(text) if p.strip()]
    new_numbers: dict[int, int] = {}  # hit index -> citation number
    cites: list[Citation] = []
    out = []
    for piece in pieces:
        body = _MARK.sub("", piece).strip()
        cited = [int(m) for m in _MARK.findall(piece)]
        if len(body) < 2:
            out.append(body)
            continue
        keep = [i - 1 for i in cited if 0 < i <= len(hits) and support(body, hits[i - 1].chunk.text) >= SUPPORTED]
        if not keep:
            # Re-point to the retrieved passage that does support the sentence, if any.
            scored = sorted(((support(body, h.chunk.text), k) for k, h in enumerate(hits)), reverse=True)
            if scored and scored[0][0] >= SUPPORTED:
                keep = [scored[0][1]]
        marks = ""
        for k in keep:
            if k not in new_numbers:
                h = hits[k].chunk
                new_numbers[k] = len(cites) + 1
                cites.append(Citation(new_numbers[k], h.source, h.page, h.heading, h.text))
            cites[new_numbers[k] - 1].support.append(body)
            marks += f"[{new_numbers[k]}]"
        end = body[-1] if body[-1] in "。！？!?" else ""
        out.append((body[:-1] if end else body) + marks + end if marks else body)
    return "".join(out), cites
