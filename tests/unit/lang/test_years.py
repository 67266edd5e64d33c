"""rag/lang/years.py: each form of a year, with the cases where it must not fire."""

from __future__ import annotations

import pytest

from rag.lang import years


@pytest.mark.parametrize("text, want", [
    ("科学技术普及法2024修订.txt", ["2024"]),
    ("2023_工作报告_2024", ["2023", "2024"]),
    ("编号12023号", []),  # part of a longer number
    ("1850年的旧档", []),  # not a year of these documents
    ("第20235期", []),
])
def test_bare(text, want):
    assert years.BARE.findall(text) == want


@pytest.mark.parametrize("text, want", [
    ("2023年青岛市科协组建了多少支服务队", ["2023"]),
    ("2023 年度预算", ["2023"]),
    ("2024版的条例", ["2024"]),
    ("共有2023人参加", []),  # a bare figure in a question is a number
    ("12023年", []),
])
def test_stated(text, want):
    assert years.STATED.findall(text) == want


@pytest.mark.parametrize("subject, is_year", [("2023年", True), ("2023", True), ("济宁", False), ("2023年度", False),
                                              ("3000", False)])
def test_subject(subject, is_year):
    assert bool(years.SUBJECT.fullmatch(subject)) is is_year


@pytest.mark.parametrize("name, want", [("科普法2024修订", ("2024", "修订")), ("2018年修正", ("2018", "修正")),
                                        ("2024年工作要点", None)])
def test_revised(name, want):
    m = years.REVISED.search(name)
    assert (m.groups() if m else None) == want
