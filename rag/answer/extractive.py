"""The offline answer: rank candidate sentences with the learned ranker, judge answerability with the
calibrated model, and compose the answer by question type, each sentence cited."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from rag.answer.candidates import Candidate, candidates
from rag.answer.features import (
    QuestionContext,
    answerability_features,
    ranker_matrix,
)
from rag.answer.ranker import AnswerModels
from rag.ingest.places import places_in
from rag.models import Citation, Hit
from rag.search.question import Question, articles_in, with_short_forms
from rag.text import normalize

MAX_ANSWER_CHARS = 260
MAX_LIST_ITEMS = 8  # items taken after a sentence ending in "："


@dataclass
class Scored:
    """One question's candidates with the ranker's logits and the answerability probability."""

    ctx: QuestionContext
    cands: list[Candidate]
    X: np.ndarray
    logits: np.ndarray
    answerable: float

    @property
    def probs(self) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logits))

    @property
    def order(self) -> list[int]:
        return [int(i) for i in np.argsort(-self.logits, kind="stable")]


def score(question: Question, weights: dict[str, float], hits: list[Hit], models: AnswerModels,
          gazetteer: frozenset[str] = frozenset(), unknown: frozenset[str] = frozenset()) -> Scored:
    ctx = QuestionContext(question, weights, gazetteer, unknown)
    cands = candidates(hits)
    X = ranker_matrix(ctx, cands)
    logits = models.ranker.logits(X)
    a = np.array([answerability_features(ctx, cands, X, logits)])
    return Scored(ctx, cands, X, logits, float(models.answerability.proba(a)[0]))


# How many sentences each kind of question wants, and how close to the best one the others must score
# (as a share of its probability): numbers and definitions want the one sentence that states them.
_SHAPE = {"list": (4, 0.5), "how": (3, 0.6), "fact": (2, 0.75)}
_SINGLE = (1, 1.0)


def _overlaps(a: Candidate, b: Candidate) -> bool:
    if a.hit.chunk.id == b.hit.chunk.id and a.start >= 0 and b.start >= 0:
        return a.start < b.end and b.start < a.end
    x, y = display(a.text), display(b.text)
    return x in y or y in x  # overlapping chunks of one document repeat sentences


def _constraint_groups(q: Question, sc: Scored) -> list[tuple[str, list[int]]]:
    """For questions naming two places, documents or articles ("青岛和济宁分别…", "第三条和第五条"), or asking
    what changed between versions of a text: the candidates satisfying each value, best first."""
    values = [("place", p) for p in sorted(q.places)] if len(q.places) >= 2 else []
    values += [("doc", normalize(d)) for d in q.documents] if len(q.documents) >= 2 else []
    values += [("article", n) for n in q.articles] if len(q.articles) >= 2 else []
    if q.change:  # "修订后有什么变化": one sentence from each version of the text, the one in force first
        by_group: dict[str, list[str]] = {}
        for c in sc.cands:
            if c.hit.versions and c.hit.chunk.source not in by_group.setdefault(c.hit.versions, []):
                by_group[c.hit.versions].append(c.hit.chunk.source)
        for sources in by_group.values():
            if len(sources) >= 2:
                values += [("source", s) for s in sorted(sources, key=lambda s: any(
                    c.hit.note for c in sc.cands if c.hit.chunk.source == s))]
    if len(values) < 2:
        return []
    groups = []
    for kind, v in values:
        ids = []
        for i in sc.order:
            c = sc.cands[i].hit.chunk
            where = with_short_forms(f"{c.title} {c.heading} {sc.cands[i].text}")
            if ((kind == "place" and v in places_in(where, sc.ctx.gazetteer)) or (kind == "doc" and v in normalize(where))
                    or (kind == "source" and c.source == v)
                    or (kind == "article" and v in articles_in(f"{c.heading} {sc.cands[i].text[:12]}"))):
                ids.append(i)
        groups.append((kind, ids))
    return groups


def choose(sc: Scored) -> list[Candidate]:
    """The candidates the answer is made of, in document order."""
    if not sc.cands:
        return []
    q = sc.ctx.question
    order = sc.order
    probs = sc.probs
    chosen: list[Candidate] = []
    total = 0

    def take(i: int) -> bool:
        nonlocal total
        c = sc.cands[i]
        if any(_overlaps(c, x) for x in chosen):
            return False
        n = len(display(c.text))
        if chosen and total + n > MAX_ANSWER_CHARS:
            return False
        chosen.append(c)
        total += n
        return True

    best = probs[order[0]]
    for kind, ids in _constraint_groups(q, sc):  # one cited sentence for each place / document / version
        # Each version's own best sentence, however the ranker liked it: the comparison needs both sides.
        floor = 0.0 if kind == "source" else 0.3 * best
        next((True for i in ids if probs[i] >= floor and take(i)), None)
    if not chosen:
        limit, keep = _SHAPE.get(q.kind, _SINGLE)
        for i in order:
            if len(chosen) >= limit or probs[i] < best * keep:
                break
            take(i)
    # A sentence that introduces a list ("应当包括下列事项：") is answered by the items after it.
    for c in [c for c in chosen if not c.window and c.text.rstrip().endswith(("：", ":"))]:
        items = [i for i, x in enumerate(sc.cands)
                 if x.hit is c.hit and not x.window and c.sentence < x.sentence <= c.sentence + MAX_LIST_ITEMS]
        for i in items:
            if not take(i):
                break
    chosen.sort(key=lambda c: (c.hit.rank, c.start))
    return chosen


def compose(chosen: list[Candidate]) -> tuple[str, list[Citation]]:
    """Answer text with a [n] marker before each sentence's full stop, and the citations it uses.

    A sentence from a regulation opens with the article as staff quote it (《条例》第十二条规定：); a
    sentence from a superseded version says so after it."""
    cites: dict[str, Citation] = {}
    parts = []
    quoted: set[str] = set()
    for cand in chosen:
        h = cand.hit
        c = h.chunk
        cite = cites.get(c.id)
        if cite is None:
            cite = cites[c.id] = Citation(len(cites) + 1, c.source, c.page, c.heading, c.text,
                                          label=h.label)
        cite.support.append(cand.text)
        if cand.start >= 0:
            cite.spans.append((cand.start, cand.end))
        body = display(cand.text)
        key = f"{c.source}\0{c.article}"
        if c.article and key not in quoted:
            quoted.add(key)
            body = re.sub(rf"^{re.escape(c.article)}\s*", "", body)
            body = f"{cite.label}规定：{body}"
        parts.append(_with_marker(body, cite.n) + h.note)
    return "".join(parts), list(cites.values())


def display(sentence: str) -> str:
    """A sentence as shown in an answer: list markers and markdown emphasis removed."""
    s = sentence.replace("**", "").strip()
    return re.sub(r"^(?:\d+[.、．]\s*|[（(][一二三四五六七八九十\d]+[）)]\s*|[一二三四五六七八九十]+、\s*)", "", s)


def _with_marker(body: str, n: int) -> str:
    body = body.rstrip("；;，,:： ")
    end = "。"
    if body and body[-1] in "。！？!?":
        body, end = body[:-1], body[-1]
    return f"{body}[{n}]{end}"
