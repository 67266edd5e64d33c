"""Sentence-level scoring shared by the extractive answerer, refusal and citation verification."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

from .cleaning import CLOSERS, TERMINAL, normalize
from .tokenizer import Tokenizer

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
_COUNT = re.compile(r"(?:多少|几)(个|支|家|项|名|人|场|次|所|座|篇|件|期|批|万|亿|元|天|年|届|位|处|条|类|种|台|户|份|本|门|块|场次|人次|余)?")


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
    if m or re.search(r"数量|数目|总数|规模|比例|百分之|几成|哪一年|哪年|何时|什么时候|日期", q):
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


def coverage(weights: dict[str, float], text: str) -> float:
    """IDF-weighted share of query tokens present in the text."""
    total = sum(weights.values())
    if not total:
        return 0.0
    t = normalize(text).lower()
    return sum(w for tok, w in weights.items() if tok in t) / total


_PLACE_ORG = re.compile(r"(?:回族|壮族|维吾尔)?(?:市|省|自治区)(?:科协|科学技术协会)")
_PLACE_SUFFIX = re.compile(r"市|省|回族|壮族|维吾尔")
_PLACE_Q = re.compile(r"([\u4e00-\u9fff]{2,3}?)(?:市|省)")
_NOT_PLACE_END = set("全本我该各在和省市县区")


def gazetteer(texts, tokenizer, checked: dict[str, bool] | None = None) -> list[str]:
    """Place names the corpus itself uses for a 科协 ("青岛市科协" -> 青岛), to tell 青岛's figures from 济宁's.

    `texts` are in indexing form (`Chunk.index_text`, already normalised).

    `checked`: part-of-speech decisions already made with the same dictionary (read, and extended
    with new ones), so a re-index does not load jieba's tagger for names it has judged before.

    Before each "市科协/省科协" the 2- or 3-character name is the one the corpus uses most often
    in front of 市/省 ("连云港" over "云港", "青岛" over "程青岛" from "新征程青岛市")."""
    text = "\n".join(texts)
    candidates: set[str] = set()
    for m in _PLACE_ORG.finditer(text):
        i = m.start()
        for n in (2, 3):
            pre = text[max(0, i - n) : i]
            if len(pre) == n and re.fullmatch(r"[\u4e00-\u9fff]+", pre) and pre[-1] not in _NOT_PLACE_END:
                candidates.add(pre)
    # How often each candidate stands right before 市/省/…: one pass over those suffixes, not one regex per candidate.
    before: Counter[str] = Counter()
    for m in _PLACE_SUFFIX.finditer(text):
        i = m.start()
        before[text[max(0, i - 2) : i]] += 1
        before[text[max(0, i - 3) : i]] += 1
    count = {c: before[c] for c in candidates}
    names = set()
    for c in candidates:
        if count[c] < 2:
            continue
        longer = [d for d in candidates if len(d) > len(c) and d.endswith(c) and count[d] >= 0.8 * count[c]]
        shorter = [d for d in candidates if len(d) < len(c) and c.endswith(d) and count[d] > 1.5 * count[c]]
        if not longer and not shorter:
            names.add(c)
    # jieba's part-of-speech tags keep places and proper names ("代表", "年度" before "市科协" are not).
    checked = {} if checked is None else checked
    for n in names:
        if n not in checked:
            checked[n] = tokenizer.is_place_word(n)
    return sorted(n for n in names if checked[n])


def places_in(text: str, gaz: frozenset[str]) -> set[str]:
    t = normalize(text)
    return {g for g in gaz if g in t}


def question_places(q: str, gaz: frozenset[str]) -> set[str]:
    """Known places in the question, plus unknown ones it names as "XX市/XX省" (烟台市)."""
    found = places_in(q, gaz)
    for m in _PLACE_Q.finditer(normalize(q)):
        name = m.group(1)
        # "我省" "全市" "各市" name no place, as in the gazetteer ("请问我省…" must not yield "问我").
        if name[-1] in _NOT_PLACE_END or any(name.endswith(g) or g.endswith(name) for g in found):
            continue
        found.add(name[-2:])
    return found


def place_mismatch(qplaces: set[str], sentence: str, heading: str, title: str, gaz: frozenset[str]) -> bool:
    """The question names a place and the sentence is about another one (nearest context wins:
    the sentence itself, else its heading, else its document)."""
    if not qplaces:
        return False
    for ctx in (sentence, heading, title):
        found = places_in(ctx, gaz)
        if found:
            return not (found & qplaces)
    return False


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
