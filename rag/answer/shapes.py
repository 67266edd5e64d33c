"""Checks on a sentence the reader picked, that hold whatever the model says: a how-many question is
never answered by a sentence without a number; captions, bylines, headings, 目录 lines, 印发 preambles
and text giving the assistant orders are never an answer. Table-tested in tests/unit/answer/test_shapes.py, with the
cases where they must not fire."""

from __future__ import annotations

import re

from rag.answer.instructions import looks_like_instruction
from rag.lang.numbers import has_number

_TARGET = re.compile(r"力争|目标|计划到|预计|争取|将达到|拟")
_TARGET_ASKED = re.compile(r"目标|计划|力争|预计|争取")

# What is never an answer. Captions: "▲…", "图为…", "（图：…）"; bylines: "记者 张三", "通讯员…", "作者：";
# 目录 lines: "第一章 总则……1", a bare "目录"; 印发 preambles: "现将《…》印发给你们", "关于印发…的通知".
_CAPTION = re.compile(r"^\s*(?:[▲△▼◆■●]|图为|图片来源|[（(]图[：:)）]|摄影[：:]|供图)")
_BYLINE = re.compile(r"^\s*(?:本报记者|记者|通讯员|作者|编辑|责任编辑|来源)[\s:：]*[\u4e00-\u9fff]{0,8}\s*$|^\s*(?:本报讯|新华社)")
_CONTENTS = re.compile(r"^\s*目\s*录\s*$|[.…·]{4,}\s*\d+\s*$")
_PREAMBLE = re.compile(r"现将《[^》]+》印发给你们|关于印发《?[^》]*》?的通知|请结合实际认真贯彻执行|请遵照执行")


def states_target(sentence: str) -> bool:
    """A goal or plan ("力争到2025年达到…"), not a figure reached."""
    return bool(_TARGET.search(sentence))


def asks_target(question: str) -> bool:
    """The question asks for the goal or plan itself, so a target figure may answer it."""
    return bool(_TARGET_ASKED.search(question))


def never_answer(sentence: str) -> bool:
    s = sentence.strip()
    return bool(_CAPTION.search(s) or _BYLINE.search(s) or _CONTENTS.search(s) or _PREAMBLE.search(s)
                or looks_like_instruction(s))  # orders to the assistant are document data, never an answer


def _flat(text: str) -> str:
    return re.sub(r"[\s《》“”\"'「」*#。！？!?；;，,：:、]", "", text)


def is_heading(sentence: str, *names: str) -> bool:
    """The sentence is only a heading or title of its passage ("宁波市科协科普画廊管理办法"), not a statement."""
    s = _flat(sentence)
    return bool(s) and any(s == _flat(n) or (len(s) >= 4 and s in _flat(n)) for n in names if n)


def fits(kind: str, sentence: str, term: str = "") -> bool:
    """The sentence can answer a question of this kind (rag.search.question.KINDS); a definition question
    that names its term (`term`) is answered only by a sentence that names it too."""
    if never_answer(sentence):
        return False
    if kind == "number":
        return has_number(sentence)
    if kind == "definition" and term:  # the head of "济宁科普惠农的四张单子模式" is what must be named
        return _flat(re.split(r"的|[,，]", term)[-1]) in _flat(sentence)
    return True
