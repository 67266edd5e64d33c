"""Features of (question, candidate sentence) pairs for the sentence ranker, and of a question's candidate
set for the answerability model. The training script (`train/answer_models.py`) and the product compute
them with these same functions, so the model sees at run time what it was trained on."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from rag.answer.candidates import Candidate
from rag.answer.sentences import contains_token
from rag.ingest.places import places_in
from rag.search.question import Question, articles_in, defines, with_short_forms
from rag.text import CN_NUMERAL, HAN, normalize

RANKER_FEATURES = (
    "cov", "cov_ctx", "cov_passage", "bigram", "precision", "log_len", "inv_rank", "rank1", "window", "heading",
    "first", "has_number", "number_q", "unit_match", "date_q", "define", "term", "list_marks", "who",
    "article_match", "article_miss", "year_match", "year_miss", "place_match", "place_miss", "doc_match",
    "doc_miss", "yesno_cov",
)
ANSWERABILITY_FEATURES = (
    "top", "second", "gap", "top_cov", "passage_cov", "uncovered", "uncovered_max", "year_missing",
    "doc_missing", "article_missing", "place_missing", "type_ok", "log_tokens", "top_place_miss", "top_year_miss",
    "top_unit", "top_heading", "dense_max", "dense_best", "dense_rank1", "top_doc_miss",
)

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*\s*(?:余|多)?(?:万|亿|千|百)?")
_DATE = re.compile(r"(?:19|20)\d{2}\s*年|\d{1,2}\s*月|\d{1,2}\s*日|[一二三四五六七八九十]{1,3}月")
_YEAR = re.compile(r"(?<!\d)((?:19|20)\d{2})(?!\d)")
_ENUM = re.compile(r"[、；;]")
_WHO = re.compile(r"由|负责|主管|主持|担任|书记|主席|部长|局长|院士|教授|委员会|政府|部门|科协|协会|学会")
_Q_WORDS = re.compile(r"什么|哪些|哪个|哪里|多少|如何|怎么|怎样|是否|为什么|请问|吗|呢")


def bigrams(text: str) -> set[str]:
    """Character bigrams of the Han runs: a paraphrase shares them where jieba cuts words differently."""
    out: set[str] = set()
    for run in re.findall(f"[{HAN}]+", text):
        out.update(run[i : i + 2] for i in range(len(run) - 1))
    return out


@dataclass
class QuestionContext:
    """What every candidate of one question is compared with (computed once per question)."""

    question: Question
    weights: dict[str, float]
    gazetteer: frozenset[str] = frozenset()
    unknown: frozenset[str] = frozenset()  # tokens of no indexed passage (informal words, typos, other topics)
    total: float = field(init=False)  # sum of the weights
    bigrams: set[str] = field(init=False)  # of the question, interrogatives left out
    _passage: dict[str, float] = field(default_factory=dict, init=False)

    def __post_init__(self):
        self.total = sum(self.weights.values())
        self.bigrams = bigrams(_Q_WORDS.sub(" ", self.question.text))

    def coverage(self, norm_text: str) -> float:
        if not self.total:
            return 0.0
        return sum(w for tok, w in self.weights.items() if contains_token(norm_text, tok)) / self.total

    def passage_coverage(self, cand: Candidate) -> float:
        c = cand.hit.chunk
        if c.id not in self._passage:
            self._passage[c.id] = self.coverage(c.index_text.lower())
        return self._passage[c.id]


def ranker_features(ctx: QuestionContext, cand: Candidate) -> list[float]:
    q = ctx.question
    c = cand.hit.chunk
    s = normalize(cand.text)
    low = s.lower()
    where = with_short_forms(normalize(f"{c.title} {c.heading}"))
    cov = ctx.coverage(low)
    cov_ctx = ctx.coverage(low + " " + where.lower())
    sb = bigrams(s)
    bigram = len(ctx.bigrams & sb) / len(ctx.bigrams) if ctx.bigrams else 0.0
    precision = len(ctx.bigrams & sb) / len(sb) if sb else 0.0
    has_number = _NUMBER.search(s) is not None
    unit_match = bool(q.unit) and re.search(rf"[\d{CN_NUMERAL}]\s*(?:余|多)?(?:万|亿)?{re.escape(q.unit)}", s) is not None
    articles_here = articles_in(f"{c.heading} {s[:12]}")
    article_match = bool(q.articles) and any(a in q.articles for a in articles_here)
    article_miss = bool(q.articles) and bool(articles_here) and not article_match
    years_here = set(_YEAR.findall(s))
    year_match = bool(q.years) and any(y in s or y in where for y in q.years)
    year_miss = bool(q.years) and bool(years_here) and not (years_here & set(q.years))
    place_text = places_in(s, ctx.gazetteer) or places_in(c.heading, ctx.gazetteer) or places_in(c.title, ctx.gazetteer)
    place_match = bool(q.places) and any(p in s or p in where for p in q.places)
    place_miss = bool(q.places) and bool(place_text) and not (place_text & q.places)
    docs = [normalize(d) for d in q.documents]
    doc_match = bool(docs) and any(d in where or d in s for d in docs)
    define = q.kind == "definition" and bool(q.term) and defines(q.term, s)
    rank = max(cand.hit.rank, 1)
    return [
        cov, cov_ctx, ctx.passage_coverage(cand), bigram, precision,
        math.log(1 + len(s)) / 5, 1.0 / rank, float(rank == 1), float(cand.window), float(cand.sentence < 0),
        float(cand.sentence == 0), float(has_number), float(q.kind == "number" and has_number), float(unit_match),
        float(q.kind == "date" and _DATE.search(s) is not None), float(define),
        float(q.kind == "definition" and bool(q.term) and normalize(q.term) in s),
        float(q.kind == "list") * min(len(_ENUM.findall(s)), 4) / 4, float(q.kind == "who" and _WHO.search(s) is not None),
        float(article_match), float(article_miss), float(year_match), float(year_miss), float(place_match),
        float(place_miss), float(doc_match), float(bool(docs) and not doc_match), float(q.kind == "yesno") * cov,
    ]


def ranker_matrix(ctx: QuestionContext, cands: list[Candidate]) -> np.ndarray:
    return np.array([ranker_features(ctx, c) for c in cands], dtype=np.float32).reshape(len(cands), len(RANKER_FEATURES))


_FI = {n: i for i, n in enumerate(RANKER_FEATURES)}


def answerability_features(ctx: QuestionContext, cands: list[Candidate], X: np.ndarray, logits: np.ndarray) -> list[float]:
    """Of the whole candidate set: how good the best sentence is, and whether any passage satisfies the
    question's constraints (the year, document, article and place it names)."""
    q = ctx.question
    if not cands:  # nothing retrieved: every constraint unmet, every word missing
        f = dict.fromkeys(ANSWERABILITY_FEATURES, 0.0)
        f.update(top=-10.0, second=-10.0, uncovered=1.0, uncovered_max=1.0, year_missing=float(bool(q.years)),
                 doc_missing=float(bool(q.documents)), article_missing=float(bool(q.articles)),
                 place_missing=float(bool(q.places)), log_tokens=math.log(1 + len(ctx.weights)))
        return [f[n] for n in ANSWERABILITY_FEATURES]
    order = np.argsort(-logits)
    top, best = float(logits[order[0]]), X[order[0]]
    second = float(logits[order[1]]) if len(order) > 1 else top - 5.0
    passages = {c.hit.chunk.id: c.hit.chunk for c in cands}
    dense = {c.hit.chunk.id: float(c.hit.vector_score) for c in cands if c.hit.vector_score is not None}
    texts = [with_short_forms(ch.index_text) for ch in list(passages.values())[:5]]
    low = [t.lower() for t in texts]
    # Missing words the corpus does have elsewhere: a passage about something else was retrieved. Words of no
    # passage at all ("里头", "啊", a typo) say nothing about which passage answers.
    missing = {tok: w for tok, w in ctx.weights.items()
               if tok not in ctx.unknown and not any(contains_token(t, tok) for t in low)}
    w_max = max(ctx.weights.values(), default=1.0) or 1.0
    uncovered = sum(missing.values()) / ctx.total if ctx.total else 0.0
    uncovered_max = max(missing.values(), default=0.0) / w_max
    year_missing = bool(q.years) and not any(y in t for y in q.years for t in texts)
    doc_missing = bool(q.documents) and not any(normalize(d) in t for d in q.documents for t in texts)
    # The named article of the named document: 第六十一条 of another law does not answer "科普法第六十一条".
    in_doc = X[:, _FI["doc_match"]] > 0 if q.documents else np.ones(len(cands), bool)
    article_missing = bool(q.articles) and not (X[:, _FI["article_match"]].astype(bool) & in_doc).any()
    place_missing = bool(q.places) and not any(p in t for p in q.places for t in texts)
    type_ok = {"number": best[_FI["number_q"]], "date": best[_FI["date_q"]], "definition": max(best[_FI["define"]], best[_FI["term"]]),
               "who": best[_FI["who"]]}.get(q.kind, 1.0)
    rank1 = next((c.hit.chunk.id for c in cands if c.hit.rank == 1), None)
    f = {
        "top": top, "second": second, "gap": top - second, "top_cov": float(best[_FI["cov"]]),
        "passage_cov": float(X[:, _FI["cov_passage"]].max()), "uncovered": uncovered, "uncovered_max": uncovered_max,
        "year_missing": float(year_missing), "doc_missing": float(doc_missing), "article_missing": float(article_missing),
        "place_missing": float(place_missing), "type_ok": float(type_ok), "log_tokens": math.log(1 + len(ctx.weights)),
        "top_place_miss": float(best[_FI["place_miss"]]), "top_year_miss": float(best[_FI["year_miss"]]),
        "top_unit": float(best[_FI["unit_match"]]) if q.unit else 1.0, "top_heading": float(best[_FI["heading"]]),
        # The query-passage cosine of dense retrieval (0 where the passage came from BM25 alone, or in BM25 mode):
        # a paraphrase shares few words with its answer but lies close to it.
        "dense_max": max(dense.values(), default=0.0), "dense_best": dense.get(cands[order[0]].hit.chunk.id, 0.0),
        "dense_rank1": dense.get(rank1, 0.0),
        # The best sentence comes from another document than the one the question names.
        "top_doc_miss": float(best[_FI["doc_miss"]]),
    }
    return [f[n] for n in ANSWERABILITY_FEATURES]
