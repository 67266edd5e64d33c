"""The offline answer from the reading model: the sentence(s) holding the best answer spans across the
top passages, each cited by its offsets, after the shape checks (`shapes`); a list question gathers the
items after a sentence that introduces them, and its sentences from several passages."""

from __future__ import annotations

import re
from dataclasses import dataclass

from rag.answer import shapes
from rag.answer.candidates import Candidate, sentence_spans
from rag.lang.lists import ITEM
from rag.lang.places import place_mismatch
from rag.models import Hit
from rag.search.question import Question, defines
from rag.search.structure import NAMED

MAX_ANSWER_CHARS = 260
MAX_LIST_ITEMS = 8  # items taken after a sentence ending in "："
# Sentences per kind of question; a second passage's span joins only when the reader is this sure of it,
# relative to the best one (list and how questions gather across passages).
_SHAPE = {"list": (3, 0.5), "how": (2, 0.6)}
_SINGLE = (1, 1.0)


@dataclass
class Picked:
    """The answer to one question (or part): the candidates to show, and the reader's confidence."""

    answerable: float  # the best passage's probability of answering
    chosen: list[Candidate]


def _list_items(text: str, n: int, sentence: str) -> list[tuple[int, int, int]]:
    """The items after sentence n when it introduces a list: it ends in "：", or it holds "：" and the
    sentences after it are numbered items."""
    after = list(enumerate(sentence_spans(text)))[n + 1:n + 1 + MAX_LIST_ITEMS]
    if sentence.rstrip().endswith(("：", ":")):
        return [(m, a, b) for m, (a, b) in after]
    if "：" not in sentence and ":" not in sentence:
        return []
    out = []
    for m, (a, b) in after:
        if not ITEM.match(text[a:b]):
            break
        out.append((m, a, b))
    return out


_INTRO = re.compile(r"[：:]\s*$|下列|如下|以下")


def _list_intro(text: str, n: int) -> list[tuple[int, int, int]]:
    """When sentence n is an item of a numbered list, the sentence that introduces the list ("应当包括下列
    事项：") as (index, start, end); else []."""
    spans = sentence_spans(text)
    if not ITEM.match(text[spans[n][0]:spans[n][1]]):
        return []
    m = n
    while m > 0 and ITEM.match(text[spans[m - 1][0]:spans[m - 1][1]]):
        m -= 1
    if m == 0:
        return []
    a, b = spans[m - 1]
    return [(m - 1, a, b)] if _INTRO.search(text[a:b]) else []


def answerable(hits: list[Hit]) -> float:
    return max((h.reading.answerable for h in hits if h.reading is not None), default=0.0)


def _sentence(h: Hit, span: tuple[int, int]) -> list[tuple[int, int, int]]:
    """(sentence index, start, end) of the sentences the span touches."""
    s, e = span
    return [(n, a, b) for n, (a, b) in enumerate(sentence_spans(h.chunk.text)) if a < max(e, s + 1) and s < b]


def pick(hits: list[Hit], q: Question, threshold: float, gaz: frozenset[str] = frozenset()) -> Picked:
    """The sentences that answer, or none when no passage is answerable enough or none fits the question.
    A span never answers when its sentence cannot answer this kind of question (`shapes`) or its passage
    is about another place than the one asked (`places.place_mismatch`; `gaz`: the corpus's places). A figure asked for is not answered by a goal ("力争…") while a passage above the threshold
    states one reached, unless the question asks for the goal."""
    target = shapes.asks_target(q.text)
    found = []
    for h in hits:
        r = h.reading
        if r is None or r.span[0] < 0 or r.answerable < threshold:
            continue
        c = h.chunk
        sents = _sentence(h, r.span)
        if q.kind == "list" and sents:  # a span on one item of a list answers with the whole list
            sents = _list_intro(c.text, sents[0][0]) or sents
        text = "".join(c.text[a:b] for _, a, b in sents)
        if q.kind == "definition" and q.term and not shapes.fits(q.kind, text, q.term):
            # the span missed, but its passage defines the term: that sentence answers
            sents = [(n, a, b) for n, (a, b) in enumerate(sentence_spans(c.text)) if defines(q.term, c.text[a:b])][:1]
            text = "".join(c.text[a:b] for _, a, b in sents)
        if not sents or not shapes.fits(q.kind, text, q.term) or shapes.is_heading(text, c.heading, c.title):
            continue
        if place_mismatch(q.places, c.text, [c.heading, c.title], gaz):
            continue
        goal = q.kind == "number" and not target and shapes.states_target(text)
        found.append((not goal, h.tier == NAMED, r.answerable, r.span_score, h, sents))
    best = answerable(hits)
    if not found:
        return Picked(best, [])
    found.sort(key=lambda x: x[:4], reverse=True)
    top = found[0][2]
    limit, keep = _SHAPE.get(q.kind, _SINGLE)
    chosen: list[Candidate] = []
    total = 0
    for _, _, p, _, h, sents in found:
        if len(chosen) >= limit or (chosen and p < keep * top):
            break
        n, a, b = sents[0][0], sents[0][1], sents[-1][2]
        if any(c.hit.chunk.id == h.chunk.id and c.start < b and a < c.end for c in chosen):
            continue
        if chosen and total + (b - a) > MAX_ANSWER_CHARS:
            break
        cand = Candidate(h, a, b, h.chunk.text[a:b], n)
        chosen.append(cand)
        total += b - a
        for m, x, y in _list_items(h.chunk.text, n, cand.text):  # "应当提交下列材料：" brings its items
            if total + (y - x) > MAX_ANSWER_CHARS:
                break
            chosen.append(Candidate(h, x, y, h.chunk.text[x:y], m))
            total += y - x
    chosen.sort(key=lambda c: (c.hit.rank, c.start))
    return Picked(best, chosen)
