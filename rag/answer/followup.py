"""Offline follow-up rewriting: "那济宁呢？" after a question about 青岛 becomes the same question about 济宁.

Each rule fires only when what it swaps is of the same kind: a place for a place, a year for a year,
an ordinal ("第二点") over a previous answer that is a list. A follow-up no rule can resolve is asked
as it is: a wrong standalone question retrieves worse than the user's own words.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from rag.lang.lists import POINT
from rag.lang.numbers import parse_cn_int
from rag.lang.places import question_places
from rag.lang.text import CN_NUMERAL, HAN
from rag.lang.years import SUBJECT as SUBJECT_YEAR

_LEAD = r"(?:那|那么|那个|还有|另外|再问一下)"
_FOLLOWUP = re.compile(rf"^{_LEAD}?(.{{1,12}}?)(?:呢|怎么样|又如何|的情况呢?|如何)[？?。!！]*$")
_LEAD_ONLY = re.compile(rf"^{_LEAD}(.{{1,12}}?)[？?。!！]*$")
# "第二点" "第3项" "第二个方面": an item of the previous answer. Never 条: "第三条" is an article.
_ORDINAL = re.compile(rf"^{_LEAD}?第([{CN_NUMERAL}\d]+)(?:点|项|个|个方面|方面)"
                      r"(?:呢|是什么|具体说说|具体是什么|展开说说|详细说说|讲讲|说说)?[？?。!！]*$")
_PRONOUN = re.compile(r"^(?:它|他们|它们|该|这个|其|这些|那些)")
_PLACE_SUFFIX = ("市", "省", "县", "区")


def rewrite_followup(question: str, history: list[tuple[str, str]], gaz: frozenset[str] = frozenset(),
                     is_place: Callable[[str], bool] | None = None) -> str:
    """The follow-up as a standalone question (unchanged when it is one already or cannot be resolved).

    `gaz`: the corpus's place names; `is_place`: a part-of-speech check for names it does not know."""
    q = question.strip()
    if not history:
        return q
    prev_q, prev_a = history[-1]
    m = _ORDINAL.match(q)
    if m:
        idx = parse_cn_int(m.group(1)) or 0
        points = list_points(prev_a)
        if 0 < idx <= len(points):
            return f"{points[idx - 1]}（{prev_q.rstrip('？?')}）"
        return q
    if _PRONOUN.match(q):  # "它的效果如何": the previous question's subject
        return f"{prev_q.rstrip('？?')}，{q}"
    m = _FOLLOWUP.match(q) or _LEAD_ONLY.match(q)
    if m and len(q) <= 16:
        subject = m.group(1).strip("的 ")
        year = SUBJECT_YEAR.fullmatch(subject)
        if year:
            old = SUBJECT_YEAR.search(prev_q)
            new = f"{year.group(1)}年"
            return prev_q.replace(old.group(0), new, 1) if old else f"{new}{prev_q}"
        place = _place_name(subject, gaz, is_place)
        if place:
            for old in sorted(question_places(prev_q, gaz, is_place), key=len, reverse=True):
                i = prev_q.find(old)
                if i >= 0:
                    j = i + len(old)
                    # "青岛市科协" -> "济宁市科协", also when the follow-up says "济宁市".
                    if j < len(prev_q) and prev_q[j] in _PLACE_SUFFIX:
                        place = place.removesuffix(prev_q[j])
                    return prev_q[:i] + place + prev_q[j:]
        return q
    return q


def _place_name(subject: str, gaz: frozenset[str], is_place: Callable[[str], bool] | None) -> str:
    """The subject when it names a place ("济宁", "烟台市", "黄岛区"), else ''."""
    if not re.fullmatch(f"[{HAN}]{{2,6}}", subject):
        return ""
    stem = subject[:-1] if subject.endswith(_PLACE_SUFFIX) and len(subject) > 2 else subject
    if stem in gaz or subject in gaz:
        return subject
    if is_place is not None and any(is_place(w) for w in (stem, subject, *(stem + s for s in _PLACE_SUFFIX))):
        return subject
    return ""


def list_points(answer: str) -> list[str]:
    """The items of a previous answer that is a list: numbered ("1." "（一）" "一是") or ；-separated.
    Plain sentences are not points."""
    text = re.sub(r"\[\d+\]", "", answer)
    if len(POINT.findall(text)) >= 2:
        items = [i.strip(" ；;。，,") for i in POINT.split(text)]
        return [i for i in items if len(i) > 1]
    items = [i.strip(" 。") for i in re.split(r"[；;]", text)]
    items = [i for i in items if len(i) > 1]
    return items if len(items) >= 2 else []
