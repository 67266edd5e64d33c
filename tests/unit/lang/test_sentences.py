"""rag/lang/sentences.py: the cuts of a text into sentences and clauses, with the cases where they must not cut."""

from __future__ import annotations

import pytest

from rag.lang.sentences import CITED_SENTENCE, CLAUSE, LINE_SENTENCE, SENTENCE, ends_sentence


def pieces(rx, text):
    return [p.strip() for p in rx.findall(text) if p.strip()]


def test_sentence_keeps_closers_and_line_breaks():
    assert pieces(SENTENCE, "他说：“好。”然后走了！剩下") == ["他说：“好。”", "然后走了！", "剩下"]
    assert pieces(SENTENCE, "第一行\n第二行。") == ["第一行\n第二行。"]  # a line break alone does not end it


def test_line_sentence_ends_at_a_line_break():
    assert pieces(LINE_SENTENCE, "第一行\n第二行。第三句") == ["第一行", "第二行。", "第三句"]
    assert pieces(LINE_SENTENCE, "3.5万人参加") == ["3.5万人参加"]  # a decimal point is no sentence end


def test_cited_sentence_keeps_its_markers():
    assert pieces(CITED_SENTENCE, "青岛组建了374支队伍。[1]共有2万人[2]。") == ["青岛组建了374支队伍。[1]", "共有2万人[2]。"]
    assert pieces(CITED_SENTENCE, "一是宣传；二是培训。") == ["一是宣传；二是培训。"]  # ；does not end an answer's sentence


def test_clause():
    assert pieces(CLAUSE, "为了普及科学，提高素质；制定本条例") == ["为了普及科学，", "提高素质；", "制定本条例"]
    assert pieces(CLAUSE, "科普法") == ["科普法"]


@pytest.mark.parametrize("line, ends", [
    ("本条例自公布之日起施行。", True), ("他说：“好。”", True), ("主要任务如下：", True), ("**重点工作。**", True), ("", True),
    ("青岛市科协组建了", False),  # cut by a page break
    ("第一章 总则", False),
])
def test_ends_sentence(line, ends):
    assert ends_sentence(line) is ends
