"""rag/lang/lists.py: a list item's number, with the cases where it must not match."""

from __future__ import annotations

import pytest

from rag.lang.lists import BLOCK_START, FIGURE_ITEM, HEADING_LEVELS, ITEM, POINT, QUESTION_PART


@pytest.mark.parametrize("sentence, rest", [
    ("1. 组织科普活动", "组织科普活动"), ("2、开展培训", "开展培训"), ("（一）总体要求", "总体要求"), ("(3)经费保障", "经费保障"),
    ("十二、附则", "附则"),
    ("2023年开展科普活动", "2023年开展科普活动"),  # a year is no item number
    ("一是加强组织领导", "一是加强组织领导"),  # 一是 introduces a point in prose, not a numbered item
    ("12.5万人次参加", "12.5万人次参加"),  # a decimal figure
])
def test_item_number(sentence, rest):
    assert ITEM.sub("", sentence) == rest


def level(line: str) -> int | None:
    return next((lv for lv, rx in HEADING_LEVELS if rx.match(line)), None)


@pytest.mark.parametrize("line, expected", [
    ("一、总体要求", 2), ("（二）主要任务", 3), ("3. 保障措施", 4), ("(4)经费", 5),
    ("12.5万人次参加活动", None),  # a figure, not an item
    ("两、", None),  # headings never number with 两
    ("第一章 总则", None),  # chapters are a level of their own, not a list marker
])
def test_heading_level(line, expected):
    assert level(line) == expected


@pytest.mark.parametrize("text, rest", [
    ("1. 全年举办活动300场", "全年举办活动300场"), ("(2) 培训500人", "培训500人"),
    ("300场活动", "300场活动"),  # a figure at the start is the figure itself
    ("123. 以上", "123. 以上"),  # three digits: a figure, not an item number
])
def test_figure_item(text, rest):
    assert FIGURE_ITEM.sub("", text) == rest


@pytest.mark.parametrize("answer, points", [
    ("一是加强组织；二是强化保障", 2), ("1.建队伍 2.建阵地 3.建机制", 3), ("（一）宣传；（二）培训", 2),
    ("（一）宣传（二）培训", 1),  # a point opens a clause: after a character it is part of the text
    ("全年开展活动12次，覆盖3万人", 0),  # figures inside a sentence are no points
])
def test_answer_points(answer, points):
    assert len(POINT.findall(answer)) == points


@pytest.mark.parametrize("question, parts", [
    ("一是什么？二是什么？", 2), ("（1）多少人？（2）多少场？", 2), ("第一，目标是什么；第二，措施有哪些", 2),
    ("第一项和第二项分别是什么", 1),  # 第二 inside a clause does not open a part
    ("2023年开展了多少场活动", 0),  # a year is not part 2
    ("十四五规划的目标", 0),
])
def test_question_parts(question, parts):
    assert len(QUESTION_PART.findall(question)) == parts


@pytest.mark.parametrize("line, opens", [
    ("## 总则", True), ("第三条 科普是…", True), ("二、主要任务", True), ("（三）保障", True), ("(2)经费", True),
    ("4.加强宣传", True), ("● 开展活动", True),
    ("2023年全市开展活动", False),  # a year opens a sentence, not a block
    ("科技工作者参加", False), ("#标签", False),  # a hash without a space is no markdown heading
])
def test_block_start(line, opens):
    assert bool(BLOCK_START.match(line)) is opens
