"""Check a generated answer against the retrieved passages: re-point or drop citations, remove
placeholder markers, and drop sentences stating figures that no passage contains."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rag.answer.wording import CITATION
from rag.lang.numbers import figures
from rag.lang.sentences import ANSWER_END, CITED_SENTENCE
from rag.lang.text import normalize
from rag.models import Citation, Hit

# Markers copied from the prompt's instructions instead of filled in: "[编号]", "[资料]", "[n]", "【1】"…
_PLACEHOLDER = re.compile(r"\[(?:编号|资料|出处|来源|引用|序号|数字|n|N|x|X|\?|…|\.\.\.)\]|【\s*(?:\d+|编号|资料)\s*】")
SUPPORTED = 0.5


@dataclass
class Verified:
    text: str
    citations: list[Citation]
    dropped: list[str] = field(default_factory=list)  # sentences removed: figures no passage states


def strip_placeholders(text: str) -> str:
    return _PLACEHOLDER.sub("", text)


def support(sentence: str, passage: str) -> float:
    """Share of the sentence's character bigrams found in the passage; 0 if it states a number the
    passage does not (compared as numbers, not substrings)."""
    s = "".join(normalize(CITATION.sub("", sentence)).split())
    p = "".join(normalize(passage.replace("**", "")).split())
    if not s:
        return 1.0
    if not figures(s) <= figures(p):
        return 0.0  # a figure the passage does not state is never supported
    grams = {s[i : i + 2] for i in range(len(s) - 1)} or {s}
    return sum(g in p for g in grams) / len(grams)


def verify_citations(text: str, hits: list[Hit]) -> Verified:
    """The answer with citations renumbered to the passages that support each sentence.

    A sentence whose figures appear in no retrieved passage is dropped (an invented number is worse
    than a shorter answer); other unsupported sentences stay, without a citation."""
    text = strip_placeholders(text)
    known = set().union(*(figures(h.chunk.text) for h in hits)) if hits else set()
    pieces = [p for p in CITED_SENTENCE.findall(text) if p.strip()]
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
        if not figures(body) <= known:
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
        end = body[-1] if body[-1] in ANSWER_END else ""
        out.append((body[:-1] if end else body) + marks + end if marks else body)
    return Verified("".join(out).strip(), cites, dropped)


def has_content(text: str) -> bool:
    """Something a user can read: not empty, not only punctuation or markers."""
    return bool(re.sub(r"[\W_]+", "", CITATION.sub("", text)))
