"""Sentence-level scoring shared by the extractive answerer, refusal and citation verification."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from rag.index.tokenizer import Tokenizer
from rag.text import CLOSERS, TERMINAL, normalize

_SPLIT = re.compile(rf"[^{TERMINAL}\n]*(?:[{TERMINAL}]+[{CLOSERS}]*|\n|$)")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*\s*(?:余|多|万|亿|千|百)?")
_CN_NUMBER = re.compile(r"[一二两三四五六七八九十百千万]+")


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SPLIT.findall(text) if s.strip()]


@dataclass
class QuestionType:
    kind: str  # number | definition | list | fact
    term: str = ""  # the defined term for "什么是X"
    unit: str = ""  # the measure word after 多少/几 ("支", "家", "项")


_DEF_PATTERNS = [
    re.compile(r"^(?:请问)?(?:什么是|何为|何谓|啥是|解释一下|解释)(.+?)[？?。！!]*$"),
    re.compile(r"^(.+?)(?:是什么意思|是什么|指什么|是指什么|的含义是什么|的含义|的意思|是啥|什么意思|的内容是什么|包括哪些内容|指的是什么)[？?。！!]*$"),
]
# 几 asks a number except in 几乎 (almost) and 几近; 多长时间/多久 ask a duration.
_COUNT = re.compile(r"(?:多少|几(?!乎|近))(个|支|家|项|名|人|场|次|所|座|篇|件|期|批|万|亿|元|天|年|届|位|处|条|类|种|台|户|份|本|门|块|场次|人次|余)?")


def question_type(q: str) -> QuestionType:
    q = normalize(q).strip()
    for rx in _DEF_PATTERNS:
        m = rx.match(q)
        if m:
            term = re.sub(r"[“”\"'《》\s]", "", m.group(1))
            term = re.sub(r"(?:具体|到底|究竟|主要)$", "", term)
            term = re.sub(r"^(?:请问|说的|所说的|提到的)", "", term)
            if 1 < len(term) <= 20:
                return QuestionType("definition", term=term)
    m = _COUNT.search(q)
    if m or re.search(r"数量|数目|总数|规模|比例|百分之|几成|哪一年|哪年|何时|什么时候|日期|多长时间|多久|多长", q):
        return QuestionType("number", unit=(m.group(1) or "") if m else "")
    if re.search(r"哪些|有什么|包括|包含|哪几|列举|都有", q):
        return QuestionType("list")
    return QuestionType("fact")


def idf_weights(tokens: list[str], doc_freq, n_docs: int) -> dict[str, float]:
    """IDF per query token, from the BM25 index's document frequencies (unknown tokens weigh most)."""
    out = {}
    for t in set(tokens):
        df = doc_freq(t)
        out[t] = math.log(1 + (n_docs - df + 0.5) / (df + 0.5))
    return out


def contains_token(text: str, token: str) -> bool:
    """`token` occurs in `text` (both normalised, lower case). Han tokens match anywhere (Chinese has no
    spaces); a Latin or digit token only as a whole word: "is" is not in "this", "12" not in "2012"."""
    if not token.isascii() or not token.isalnum():
        return token in text
    return re.search(rf"(?<![a-z0-9]){re.escape(token)}(?![a-z0-9])", text) is not None


def coverage(weights: dict[str, float], text: str) -> float:
    """IDF-weighted share of query tokens present in the text."""
    total = sum(weights.values())
    if not total:
        return 0.0
    t = normalize(text).lower()
    return sum(w for tok, w in weights.items() if contains_token(t, tok)) / total


def sentence_score(sentence: str, weights: dict[str, float], qt: QuestionType, context: str = "") -> float:
    """How well a sentence answers the question: term coverage (the sentence, or its document's
    title/heading for terms like the city) plus a bonus for the answer's form."""
    s = normalize(sentence)
    score = 0.8 * coverage(weights, s) + 0.2 * coverage(weights, s + " " + normalize(context))
    if qt.kind == "number":
        nums = _NUMBER.findall(s)
        if nums:
            score += 0.25
            if qt.unit and re.search(r"\d\s*(?:余|多)?(?:万|亿)?" + re.escape(qt.unit), s):
                score += 0.35
        elif _CN_NUMBER.search(s) and qt.unit and re.search("[一二两三四五六七八九十百千万]" + re.escape(qt.unit), s):
            score += 0.3
    elif qt.kind == "definition" and qt.term:
        term = normalize(qt.term)
        flat = s.replace("“", "").replace("”", "").replace("*", "")
        if re.search(re.escape(term) + r"[^，。]{0,3}?(?:[:：]|是指|是|指|即|就是)", flat):
            score += 0.6
        elif term in flat:
            score += 0.2
    elif qt.kind == "list":
        score += min(s.count("、") + s.count(";") + s.count("；"), 4) * 0.06
    return score


class Scorer:
    """Question-aware scoring over a tokenizer and the index's document frequencies."""

    def __init__(self, tokenizer: Tokenizer, doc_freq, n_docs: int):
        self.tokenizer = tokenizer
        self.doc_freq = doc_freq
        self.n_docs = max(n_docs, 1)

    def weights(self, question: str) -> dict[str, float]:
        return idf_weights(self.tokenizer.tokens(question), self.doc_freq, self.n_docs)
