"""rag/lang/numbers.py: numerals, figures, the values a question states, with the cases where they must not fire."""

from __future__ import annotations

import pytest

from rag.lang.numbers import articles_in, cn_numeral, figures, has_number, parse_cn_int, stated_values


@pytest.mark.parametrize("text, value", [
    ("十一", 11), ("二十三", 23), ("一百零五", 105), ("两万", 20000), ("3", 3),
    ("一是", None), ("进一步", None), ("二三", None), ("十十", None), ("①", None), ("", None),
])
def test_parse_cn_int(text, value):
    assert parse_cn_int(text) == value


@pytest.mark.parametrize("n", [1, 10, 11, 20, 105, 1001, 9999])
def test_cn_numeral_round_trip(n):
    assert parse_cn_int(cn_numeral(n)) == n


@pytest.mark.parametrize("text, found", [
    ("依照第十二条和第105条", [12, 105]), ("第一条", [1]),
    ("第一章 总则", []),  # a chapter, not an article
    ("条例共三十条", []),  # a count of articles, no article named
])
def test_articles_in(text, found):
    assert articles_in(text) == found


@pytest.mark.parametrize("text, values", [
    ("组建了374支队伍", {374.0}), ("经费1,200万元", {1200.0}), ("增长3.5%", {3.5}), ("12，34", {12.0, 34.0}),
    ("1. 举办活动", set()),  # a list item's marker states nothing
    ("全年开展科普活动", set()),
])
def test_figures(text, values):
    assert figures(text) == values


@pytest.mark.parametrize("question, years, values", [
    ("青岛有多少支队伍，2023年新增几支", {"2023"}, set()),
    ("第一条讲什么", set(), {1.0}),  # an ordinal counts
    ("一个社会团体有几名理事", set(), set()),  # a bare 一 is an article, not a figure
    ("十四五期间建成几个基地", set(), set()),  # a plan period is a date
    ("进一步加强哪些工作", set(), set()), ("370支还是374支", set(), {370.0, 374.0}),
    ("三百支队伍", set(), {300.0}),
])
def test_stated_values(question, years, values):
    assert stated_values(question, years) == values


@pytest.mark.parametrize("sentence, expected", [
    ("组建了374支队伍", True), ("组建了三百支队伍", True), ("占五分之一", True),
    ("进一步统一思想", False), ("一些地方开展了活动", False),
])
def test_has_number(sentence, expected):
    assert has_number(sentence) is expected
