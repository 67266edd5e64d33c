"""rag/lang/short_forms.py and questions.py: short forms of names and the words of asking, with cases
where they must not apply."""

from __future__ import annotations

import pytest

from rag.lang.questions import FILLERS, INTERROGATIVE, STOPWORDS
from rag.lang.short_forms import short_spellings, shortened


@pytest.mark.parametrize("name, short", [
    ("科学技术普及法", ["科普法", "科技普及法"]),  # each long form on its own ("中国科学技术协会章程", ["中国科协章程", "中国科技协会章程"]),
    ("科学技术进步法", ["科技进步法"]),
    ("科普法", []),  # already short
    ("中华人民共和国科普法", []),  # the national prefix stays in a name's spelling
])
def test_short_spellings(name, short):
    assert short_spellings(name) == short


@pytest.mark.parametrize("text, canon", [
    ("中华人民共和国科学技术普及法", "科普法"), ("青岛市科学技术协会", "青岛市科协"),
    ("科学家精神", "科学家精神"),  # 科学 alone is no long form
])
def test_shortened(text, canon):
    assert shortened(text) == canon


@pytest.mark.parametrize("token, asking", [
    ("几支", True), ("哪一年", True), ("多少", True),
    ("哪吒", True),  # the pattern's known over-reach: a two-character name after 哪 is dropped as well
    ("科协", False), ("几何学课程", False), ("多少年来坚持", False),
])
def test_interrogative(token, asking):
    assert bool(INTERROGATIVE.match(token)) is asking


def test_stopwords_and_fillers():
    assert {"什么", "哪些", "请问"} <= STOPWORDS and not {"科协", "科普", "志愿"} & STOPWORDS
    assert FILLERS.sub("", "请问青岛一共有多少支队伍呢") == "青岛支队伍"
    assert FILLERS.sub("", "科普基地") == "科普基地"
