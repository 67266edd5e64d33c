"""Questions with several parts: "第一…第二…", "（1）…（2）…", several question sentences, or one question
about two or more places "分别" — split so that each part is read and answered (or named as not found)."""

from __future__ import annotations

import re

from rag.lang.lists import QUESTION_PART

_QUESTION_END = re.compile(r"(?<=[？?])")
_JOINER = "和|与|及|以及|、|跟"
_EACH = re.compile(r"分别|各自|各")

_ARTICLES = re.compile(rf"第[一二三四五六七八九十百零〇\d]+条(?:(?:{_JOINER})第[一二三四五六七八九十百零〇\d]+条)+")
_PRONOUN = re.compile(r"^(?:它|其|这|那|该|他|她|此)")
MIN_PART = 4  # characters; a shorter piece is not a question of its own


def split_parts(question: str, places: list[str] | None = None) -> list[str]:
    """The parts of the question (a single part: [question])."""
    q = question.strip()
    marks = list(QUESTION_PART.finditer(q))
    if len(marks) >= 2:
        head = q[:marks[0].start()].strip(" ，,：:")
        head = re.sub(r"(?:请|麻烦)?(?:你)?(?:分别|依次)?(?:说明|回答|介绍|列出|说说|讲讲)(?:一下)?[：:]?$", "", head).strip(" ，,：:")
        pieces = [q[m.end():(marks[i + 1].start() if i + 1 < len(marks) else len(q))].strip(" ，,；;。") for i, m in enumerate(marks)]
        pieces = [p for p in pieces if len(p) >= MIN_PART]
        if len(pieces) >= 2:
            return [f"{head}，{p}" if head else p for p in pieces]
    sentences = [s.strip(" ，,") for s in _QUESTION_END.split(q) if len(s.strip(" ，,")) >= MIN_PART]
    if len(sentences) >= 2 and not any(_PRONOUN.match(x) for x in sentences[1:]):
        return sentences  # "它的作用是什么？" leans on the first sentence: asked as one question
    arts = _ARTICLES.search(q)
    if arts:  # "第三条和第五条分别规定了什么": one part per article
        named = re.findall(r"第[一二三四五六七八九十百零〇\d]+条", arts.group(0))
        rest = _EACH.sub("", q[arts.end():], count=1)
        return [q[:arts.start()] + a + rest for a in named]
    if places and len(places) >= 2 and _EACH.search(q):
        alts = "|".join(re.escape(p) for p in sorted(places, key=len, reverse=True))
        group = re.search(rf"(?:{alts})[市省县区]?(?:(?:{_JOINER})(?:{alts})[市省县区]?)+", q)
        if group:
            named = re.findall(rf"(?:{alts})[市省县区]?", group.group(0))
            rest = _EACH.sub("", q[group.end():], count=1)
            return [q[:group.start()] + p + rest for p in named]
    return [q]

