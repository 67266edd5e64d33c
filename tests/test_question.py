"""Question analysis, candidate spans and answer composition: tables with the cases where a rule must not fire."""

import numpy as np
import pytest

from rag.answer.candidates import candidates, clause_windows, sentence_spans
from rag.answer.extractive import Scored, choose, compose
from rag.answer.features import QuestionContext
from rag.models import Chunk, Hit
from rag.search.question import analyze, document_names

GAZ = frozenset({"青岛", "济宁", "天津"})


@pytest.mark.parametrize("q, kind", [
    ("青岛市科协组建了多少支科技志愿服务队", "number"), ("有几家院士工作站", "number"), ("培训持续了多长时间", "number"),
    ("项目建设要多久", "number"), ("全国性社会团体需要多少活动资金", "number"),
    ("什么是四服务一加强", "definition"), ("科技工作者日是什么", "definition"), ("何谓科普基地", "definition"),
    ("科普大篷车开进了哪些地方", "list"), ("科协的任务包括哪几个方面", "list"),
    ("青岛是哪一年入选科创中国试点城市的", "date"), ("本法什么时候开始施行", "date"), ("条例自何时起施行", "date"),
    ("谁担任福建省科协党组书记", "who"), ("科普工作由哪个部门主管", "who"),
    ("科技馆建在哪里", "where"), ("如何申请科普基地", "how"), ("为什么要建设科普画廊", "how"),
    ("哪一条规定了科普日", "article"), ("社团登记规定在第几条", "article"),
    ("科协可以接受捐赠吗", "yesno"), ("是否需要年检", "yesno"),
    ("科协组织的宗旨", "fact"),
    # Must not fire: 几乎 is "almost", not "how many"; "第三条是什么" asks an article's content, not which article.
    ("几乎所有学会都成立党组织了吗", "yesno"), ("是否几近完成", "yesno"), ("第三条是什么", "fact"),
    ("哪些人可以申请托举工程", "who"),
    ("条例是怎样定义科学技术普及的", "definition"), ("条例对科协是怎么定性的", "definition"),
    ("科协如何开展工作", "how"),  # 如何 without 定义 is a how-question
])
def test_question_kind(q, kind):
    assert analyze(q, GAZ).kind == kind


def test_definition_term_and_count_unit():
    assert analyze("什么是“四服务一加强”？").term == "四服务一加强"
    assert analyze("广东省科学技术普及条例是怎样定义科学技术普及的？").term == "科学技术普及"
    assert analyze("重庆市条例对科协是怎么定性的？").term == "科协"
    assert analyze("组建了多少支服务队").unit == "支"
    assert analyze("有多少万元资金").unit == "万元"
    assert analyze("有几家学会").unit == "家"
    assert analyze("奖金是多少钱").unit == "元" and analyze("每天几点开门").kind == "date"


@pytest.mark.parametrize("q, years, docs, articles, places", [
    ("2023年青岛市科协组建了多少支服务队", ["2023"], [], [], {"青岛"}),
    ("《科学技术普及法》第十一条规定了什么", [], ["科学技术普及法"], [11], set()),
    ("第二十三条和第105条分别说了什么", [], [], [23, 105], set()),
    ("青岛和济宁分别有多少家学会", [], [], [], {"青岛", "济宁"}),
    ("青岛和济宁各有多少家学会", [], [], [], {"青岛", "济宁"}),
    ("各县区科协组建了哪些队伍", [], [], [], set()),
    # Must not fire: 一 in 进一步 / 一是 is no article or number; a bare 2023 without 年 is no year; 城市 is no place.
    ("如何进一步加强科普工作", [], [], [], set()),
    ("编号2023的项目", [], [], [], set()),
    ("科协如何服务城市发展", [], [], [], set()),
    ("如何节省经费", [], [], [], set()),
])
def test_question_constraints(q, years, docs, articles, places):
    a = analyze(q, GAZ)
    assert (a.years, a.documents, a.articles, a.places) == (years, docs, articles, places)


def test_organisations():
    assert analyze("青岛市科协组建了多少支队伍").orgs == ["青岛市科协"]
    assert analyze("组建了多少支队伍").orgs == []


# -- candidates ------------------------------------------------------------------------------
def chunk(text, cid="c1", heading="", title="某文档", source="a.txt"):
    return Chunk(cid, source, title, heading, None, 0, text)


def test_sentence_spans_are_offsets_into_the_text():
    text = "  第一句话。第二句话！\n第三句没有句号\n"
    spans = sentence_spans(text)
    assert [text[s:e] for s, e in spans] == ["第一句话。", "第二句话！", "第三句没有句号"]
    assert spans[0][0] == 2


def test_clause_windows_cut_only_at_clause_marks():
    s = "甲乙丙丁戊，己庚辛壬癸，子丑寅卯辰。"
    wins = clause_windows(s, 0, len(s), limit=12)
    assert all(s[a:b].endswith(("，", "。")) for a, b in wins)  # never mid-word
    assert all(b - a <= 12 for a, b in wins)
    assert (0, len(s)) not in wins and (0, 6) in wins
    # Must not fire: a sentence without clause marks has no window shorter than itself.
    assert clause_windows("甲乙丙丁戊己庚辛", 0, 8, limit=5) == []


def test_candidates_carry_spans_headings_and_windows():
    long = "，".join(f"第{i}项工作进展顺利并取得成效" for i in range(12)) + "。"
    h = Hit(chunk("短句一。" + long, heading="文档 > 曾能建 福建省科协党组书记"), 1.0, rank=1)
    cands = candidates([h])
    assert cands[0].sentence == -1 and cands[0].text == "曾能建 福建省科协党组书记"
    for c in cands[1:]:
        assert h.chunk.text[c.start:c.end] == c.text
    assert any(c.window for c in cands) and sum(not c.window for c in cands) == 3
    # Must not fire: a question in the text is no answer; a heading that is the document title is not a candidate.
    assert [c.text for c in candidates([Hit(chunk("什么是四服务一加强？答案在这里。"), 1.0, rank=1)])] == ["答案在这里。"]
    titled = Hit(chunk("连云港市科协工作报告\n去年开展活动96场。", title="连云港市科协工作报告 2018"), 1.0, rank=1)
    assert [c.text for c in candidates([titled])] == ["去年开展活动96场。"]  # the document's own title is no answer
    assert all(c.sentence >= 0 for c in candidates([Hit(chunk("正文内容。", heading="某文档"), 1.0, rank=1)]))


# -- composition -----------------------------------------------------------------------------
def scored(q, hits, logits):
    cands = candidates(hits)
    assert len(cands) == len(logits)
    return Scored(QuestionContext(analyze(q, GAZ), {"x": 1.0}, GAZ), cands, np.zeros((len(cands), 1)),
                  np.array(logits, dtype=float), 0.9)


def test_number_question_takes_the_one_best_sentence():
    h = Hit(chunk("共组建服务队120支。另有培训30场。"), 1.0, rank=1)
    text, cites = compose(choose(scored("组建了多少支服务队", [h], [3.0, 2.9])))
    assert text == "共组建服务队120支[1]。" and cites[0].support == ["共组建服务队120支。"]


def test_list_gathers_across_passages_without_repeats():
    a = Hit(chunk("开展了科普讲座。举办了科技展览。", "c1"), 1.0, rank=1)
    b = Hit(chunk("举办了科技展览。组织了研学活动。", "c2", source="b.txt"), 0.9, rank=2)
    text, cites = compose(choose(scored("开展了哪些活动", [a, b], [2.0, 1.9, 1.9, 1.8])))
    assert text.count("举办了科技展览") == 1  # the overlapping chunk's repeat is dropped
    assert "组织了研学活动[2]" in text and len(cites) == 2


def test_two_places_get_one_sentence_each():
    a = Hit(chunk("青岛市科协组建服务队50支。", "c1", title="青岛市科协报告"), 1.0, rank=1)
    b = Hit(chunk("青岛市另有学会72家。", "c3", title="青岛市科协报告"), 0.95, rank=2)
    c = Hit(chunk("济宁市科协组建服务队30支。", "c2", title="济宁市科协报告", source="b.txt"), 0.9, rank=3)
    text, cites = compose(choose(scored("青岛和济宁分别组建了多少支服务队", [a, b, c], [3.0, 2.5, 1.0])))
    assert "50支" in text and "30支" in text and "72家" not in text
    assert [x.source for x in cites] == ["a.txt", "b.txt"]


def test_overlapping_window_and_sentence_are_not_both_taken():
    long = "，".join(f"第{i}项工作进展顺利并取得成效" for i in range(12)) + "。"
    h = Hit(chunk(long), 1.0, rank=1)
    cands = candidates([h])
    logits = [1.0] * len(cands)
    chosen = choose(scored("开展了哪些工作", [h], logits))
    for i, x in enumerate(chosen):
        for y in chosen[i + 1:]:
            assert x.end <= y.start or y.end <= x.start


TITLES = ["中华人民共和国科学技术普及法 2002 2002年6月29日 第九届全国人民代表大会常务委员会第二十八次会议通过",
          "宁波市科协科普画廊管理办法 一、总则", "宁波市科学技术普及条例 2018 2018年10月26日",
          # Must not yield a name: reports' headlines.
          "青岛市科协 奋力谱写新时代发展新篇章 勇担新使命", "连云港市科协 十届三次全委会议讲话和工作报告 连科协〔2018〕16号"]


def test_document_names_from_titles():
    # with the short forms staff use: 科学技术普及法 -> 科普法, 宁波市科学技术普及条例 -> 宁波市科普条例
    assert document_names(TITLES) == {"科学技术普及法", "科普法", "宁波市科协科普画廊管理办法", "宁波市科学技术普及条例",
                                      "宁波市科普条例"}


@pytest.mark.parametrize("q, docs", [
    ("宁波市科协科普画廊管理办法和宁波市科学技术普及条例分别怎么规定画廊维护", ["宁波市科协科普画廊管理办法", "宁波市科学技术普及条例"]),
    ("中华人民共和国科学技术普及法第十条", ["科学技术普及法"]),
    ("《科普法》怎么规定", ["科普法"]),
    # Must not fire: a name the corpus does not have, without 《》, is no document constraint.
    ("浙江省科学技术普及条例怎么规定", []),
])
def test_questions_name_the_corpus_documents(q, docs):
    assert analyze(q, GAZ, documents=document_names(TITLES)).documents == docs


def test_two_articles_get_one_sentence_each():
    a = Hit(chunk("第三条 科协是群众组织。", "c1", heading="第一章"), 1.0, rank=1)
    b = Hit(chunk("第三条 另一种说法。", "c3", heading="第一章"), 0.95, rank=2)
    c = Hit(chunk("第五条 科协经费来源。", "c2", heading="第一章"), 0.9, rank=3)
    text, _ = compose(choose(scored("第三条和第五条分别规定了什么", [a, b, c], [3.0, 2.9, 1.0])))
    assert "群众组织" in text and "经费来源" in text and "另一种说法" not in text


@pytest.mark.parametrize("term, text, yes", [
    ("社会团体", "本条例所称社会团体，是指中国公民自愿组成的非营利性社会组织。", True),
    ("科学技术普及", "本条例所称科学技术普及（以下简称科普），是指采取公众易于理解的方式普及科学技术知识。", True),
    ("科普画廊", "科普画廊是指直接面向公众传播科学技术信息的固定科普设施。", True),
    ("四服务一加强", "“四服务一加强”：为科技工作者服务、为创新驱动发展服务。", True),
    # must not fire: the term is used, not defined
    ("科普画廊", "各级科协要加强对科普画廊的督促检查。", False),
    ("社会团体", "社会团体应当遵守宪法、法律。", False),
])
def test_defines(term, text, yes):
    from rag.search.question import defines

    assert defines(term, text) is yes


def test_short_forms():
    from rag.search.question import with_short_forms

    assert "科普法" in with_short_forms("中华人民共和国科学技术普及法")
    assert "科协条例" in with_short_forms("河南省科学技术协会条例")
    assert with_short_forms("社会团体登记管理条例") == "社会团体登记管理条例"
