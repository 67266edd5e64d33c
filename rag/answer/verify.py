"""Check a generated answer against the retrieved passages: re-point or drop citations, remove
placeholder markers, and drop sentences stating figures that no passage contains."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rag.answer.wording import CITATION
from rag.models import Citation, Hit
from rag.text import normalize

# Markers copied from the prompt's instructions instead of filled in: "[编号]", "[资料]", "[n]", "【1】"…
_PLACEHOLDER = re.compile(r"\[(?:编号|资料|出处|来源|引用|序号|数字|n|N|x|X|\?|…|\.\.\.)\]|【\s*(?:\d+|编号|资料)\s*】")
_PIECE = re.compile(r"[^。！？!?\n]*(?:\[\d+\])*[。！？!?]?(?:\[\d+\])*")
# A number as written: digits with optional thousands separators and decimals ("1,200", "3.5"),
# never part of a longer digit run ("12" is not in "2012").
# NFKC turns "，" into ",": "12,34,56" is three numbers, "1,200" one (a comma before exactly 3 digits).
_NUMBER = re.compile(r"(?<![\d.])\d{1,3}(?:,\d{3})+(?![\d])(?:\.\d+)?|(?<![\d.])\d+(?:\.\d+)?(?![\d])")
# A list item's own marker ("1. " "2、" "(3)") is not a figure the passage must state.
_LIST_MARKER = re.compile(r"^\s*(?:\d{1,2}[.、．)）]|[（(]\d{1,2}[）)])\s*")
SUPPORTED = 0.5


@dataclass
class Verified:
    text: str
    citations: list[Citation]
    dropped: list[str] = field(default_factory=list)  # sentences removed: figures no passage states


def numbers(text: str) -> set[float]:
    """The numbers a text states, as values ("1,200" and "1200" are the same number)."""
    return {float(n.replace(",", "")) for n in _NUMBER.findall(_LIST_MARKER.sub("", normalize(text)))}


def strip_placeholders(text: str) -> str:
    return _PLACEHOLDER.sub("", text)


def support(sentence: str, passage: str) -> float:
    """Share of the sentence's character bigrams found in the passage; 0 if it states a number the
    passage does not (compared as numbers, not substrings)."""
    s = "".join(normalize(CITATION.sub("", sentence)).split())
    p = "".join(normalize(passage.replace("**", "")).split())
    if not s:
        return 1.0
    if not numbers(s) <= numbers(p):
        return 0.0  # a figure the passage does not state is never supported
    grams = {s[i : i + 2] for i in range(len(s) - 1)} or {s}
    return sum(g in p for g in grams) / len(grams)


def verify_citations(text: str, hits: list[Hit]) -> Verified:
    """The answer with citations renumbered to the passages that support each sentence.

    A sentence whose figures appear in no retrieved passage is dropped (an invented number is worse
    than a shorter answer); other unsupported sentences stay, without a citation."""
    text = strip_placeholders(text)
    known = set().union(*(numbers(h.chunk.text) for h in hits)) if hits else set()
    pieces = [p for p in _PIECE.findall(text) if p.strip()]
    new_numbers: dict[int, int] = {}  # hit index -> citation number
    cites: list[Citation] = []
    out: list[str] = []
    dropped: list[str] = []
    for piece in pieces:
        body = CITATION.sub("", piece).strip()
        cited = [int(m) for m in CITATION.findall(piece)]
        if len(body) < 2:
            out.append(body)
            continue
        if not numbers(body) <= known:
            dropped.append(body)
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
                cites.append(Citation(new_numbers[k], h.source, h.page, h.heading, h.text, label=hits[k].label))
            cites[new_numbers[k] - 1].support.append(body)
            marks += f"[{new_numbers[k]}]"
        end = body[-1] if body[-1] in "。！？!?" else ""
        out.append((body[:-1] if end else body) + marks + end if marks else body)
    return Verified("".join(out).strip(), cites, dropped)


def has_content(text: str) -> bool:
    """Something a user can read: not empty, not only punctuation or markers."""
    return bool(re.sub(r"[\W_]+", "", CITATION.sub("", text)))
