"""Question analysis, candidate spans and answer composition: tables with the cases where a rule must not fire."""

import pytest

from rag.answer.candidates import candidates, clause_windows, sentence_spans
from rag.answer.compose import compose
from rag.answer.spans import pick
from rag.e5.reader import Reading
from rag.models import Chunk, Hit
from rag.search.question import Question, analyze, document_names

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
    # the term, not the document that defines it; a quote inside the term stays part of it
    assert analyze("宁波市科学技术普及条例所称的“科普组织”是指什么？").term == "科普组织"
    assert analyze("本条例所称科普场馆是指什么").term == "科普场馆"
    assert analyze("管理办法里说的“科普画廊”是指什么？").term == "科普画廊"
    assert analyze("什么是“三型”组织").term == "三型组织"
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


# -- composition from the reader's spans ---------------------------------------------------------
def read(h: Hit, span: str, answerable: float, score: float = 5.0) -> Hit:
    """The hit as the reading model would leave it: its best span (located by text) and probabilities."""
    at = h.chunk.text.index(span)
    h.reading = Reading(1.0, answerable, (at, at + len(span)), score)
    return h


def test_number_question_takes_the_sentence_holding_the_span():
    h = read(Hit(chunk("共组建服务队120支。另有培训30场。"), 1.0, rank=1), "120支", 0.9)
    p = pick([h], Question("", "number"), 0.5)
    text, cites = compose(p.chosen)
    assert text == "共组建服务队120支[1]。" and cites[0].support == ["共组建服务队120支。"] and cites[0].spans == [(0, 11)]
    assert p.answerable == 0.9


def test_below_the_threshold_nothing_is_chosen():
    h = read(Hit(chunk("共组建服务队120支。"), 1.0, rank=1), "120支", 0.3)
    assert pick([h], Question("", "number"), 0.5).chosen == []


def test_a_number_question_skips_a_sentence_without_a_number():
    a = read(Hit(chunk("科普工作不断提速。", "c1"), 1.0, rank=1), "科普工作不断提速", 0.95)
    b = read(Hit(chunk("组建服务队374支。", "c2", source="b.txt"), 0.9, rank=2), "374支", 0.8)
    assert [c.text for c in pick([a, b], Question("", "number"), 0.5).chosen] == ["组建服务队374支。"]
    # must not fire: the same sentence answers a question that asks no number
    assert [c.text for c in pick([a, b], Question("", "fact"), 0.5).chosen] == ["科普工作不断提速。"]
    assert pick([a], Question("", "number"), 0.5).chosen == []  # nothing fits: no answer


def test_a_figure_reached_before_a_target():
    a = read(Hit(chunk("力争到2025年建成科普基地100个。", "c1"), 1.0, rank=1), "100个", 0.95)
    b = read(Hit(chunk("目前已建成科普基地60个。", "c2"), 0.9, rank=2), "60个", 0.7)
    assert "60个" in pick([a, b], Question("", "number"), 0.5).chosen[0].text
    assert "100个" in pick([a, b], Question("计划建成多少个", "number"), 0.5).chosen[0].text


def test_an_answer_about_another_place_is_not_taken():
    gaz = frozenset({"聊城", "济宁", "青岛"})
    jining = read(Hit(chunk("济宁市科协配备科普大篷车7辆。", "c1", title="济宁市科协综述"), 1.0, rank=1), "7辆", 0.95)
    q = Question("聊城的科普大篷车有几辆", "number", places={"聊城"})
    assert pick([jining], q, 0.5, gaz).chosen == []
    # must not fire: the place asked in the passage (not the sentence), a compilation's title naming another
    # place, another place mentioned in passing in a document about the asked one, no place in any
    # context, a question that names no place
    shandong = read(Hit(chunk("举办山东省大学生创新大赛，5743个项目参赛。", "c4", title="济宁市科协综述"), 1.0, rank=1),
                    "5743个", 0.9)
    assert pick([shandong], Question("济宁的大赛多少项目参赛", "number", places={"济宁"}), 0.5, gaz | {"山东"}).chosen
    guangzhou = read(Hit(chunk("近年来，广州市重视科普。建成乡村科普e站173个。", "c2", title="天津市科协汇编"), 1.0, rank=1),
                     "173个", 0.9)
    assert pick([guangzhou], Question("广州乡村科普e站建了几个", "number", places={"广州"}), 0.5,
                gaz | {"广州", "天津"}).chosen
    plain = read(Hit(chunk("共建成科普基地12个。", "c3", title="工作报告"), 1.0, rank=1), "12个", 0.9)
    assert pick([plain], q, 0.5, gaz).chosen
    assert pick([jining], Question("科普大篷车有几辆", "number"), 0.5, gaz).chosen


def test_a_definition_comes_from_the_sentence_that_defines_the_term():
    text = "1. **“三型”组织**：开放型、枢纽型、平台型科协组织；\n2. **“四服务一加强”**：服务科技工作者，加强自身建设；"
    h = read(Hit(chunk(text), 1.0, rank=1), "开放型", 0.9)  # the span landed on the wrong item
    q = Question("什么是四服务一加强", "definition", term="四服务一加强")
    assert [c.text for c in pick([h], q, 0.5).chosen] == ["2. **“四服务一加强”**：服务科技工作者，加强自身建设；"]
    # must not fire: a passage that does not define the term gives no answer; the right span stays
    assert pick([h], Question("什么是科普大篷车", "definition", term="科普大篷车"), 0.5).chosen == []
    assert "三型" in pick([h], Question("什么是三型组织", "definition", term="三型组织"), 0.5).chosen[0].text


def test_a_span_on_one_item_answers_with_the_whole_list():
    text = "第十四条 社会团体的章程应当包括下列事项：\n（一）名称、住所；\n（二）会员资格及其权利、义务；\n（三）终止程序。"
    h = read(Hit(chunk(text), 1.0, rank=1), "会员资格及其权利、义务", 0.9)
    answer, _ = compose(pick([h], Question("章程应当包括哪些事项", "list"), 0.5).chosen)
    assert "下列事项" in answer and "名称、住所" in answer and "终止程序" in answer
    # must not fire: a fact question keeps the item itself; numbered sentences without an introduction stay
    fact = pick([h], Question("章程对会员有什么规定", "fact"), 0.5).chosen
    assert [c.text for c in fact] == ["（二）会员资格及其权利、义务；"]
    bare = read(Hit(chunk("（一）开展讲座；\n（二）举办展览；", "c2"), 1.0, rank=1), "举办展览", 0.9)
    assert [c.text for c in pick([bare], Question("开展了哪些活动", "list"), 0.5).chosen] == ["（二）举办展览；"]


def test_the_article_the_question_names_answers_first():
    a = read(Hit(chunk("第一百零四条 国家加强科研诚信建设。", "c1"), 1.0, rank=1), "国家加强科研诚信建设", 0.9)
    b = read(Hit(chunk("第一百零三条 国家建立科技伦理委员会。", "c2"), 0.9, rank=2), "国家建立科技伦理委员会", 0.6)
    b.tier = 0  # rag.search.structure: the named article
    assert [c.hit.chunk.id for c in pick([a, b], Question("第一百零三条规定了什么", "fact"), 0.5).chosen] == ["c2"]
    b.tier = 3  # must not fire without the tier: the reader's confidence decides
    assert [c.hit.chunk.id for c in pick([a, b], Question("第一百零三条规定了什么", "fact"), 0.5).chosen] == ["c1"]


def test_list_gathers_across_passages_without_repeats():
    a = read(Hit(chunk("开展了科普讲座。举办了科技展览。", "c1"), 1.0, rank=1), "科普讲座", 0.9)
    b = read(Hit(chunk("组织了研学活动。", "c2", source="b.txt"), 0.9, rank=2), "研学活动", 0.8)
    c = read(Hit(chunk("开展了科普讲座。", "c3", source="c.txt"), 0.8, rank=3), "科普讲座", 0.2)
    text, cites = compose(pick([a, b, c], Question("", "list"), 0.5).chosen)
    assert "科普讲座[1]" in text and "研学活动[2]" in text and len(cites) == 2
    # a fact question keeps to the one best sentence
    assert len(pick([a, b, c], Question("", "fact"), 0.5).chosen) == 1


def test_a_sentence_introducing_a_list_brings_its_items():
    h = read(Hit(chunk("申请应当提交下列材料：（一）申请书；（二）章程草案；（三）验资报告。其他事项另行规定。"), 1.0, rank=1),
             "下列材料", 0.9)
    text, _ = compose(pick([h], Question("", "list"), 0.5).chosen)
    assert "申请书" in text and "章程草案" in text and "验资报告" in text and "另行规定" not in text


def test_captions_are_never_the_answer():
    a = read(Hit(chunk("▲青岛市科技志愿者在社区开展活动。", "c1"), 1.0, rank=1), "科技志愿者", 0.95)
    b = read(Hit(chunk("志愿者在社区开展科普讲座30场。", "c2"), 0.9, rank=2), "科普讲座30场", 0.7)
    assert [c.hit.chunk.id for c in pick([a, b], Question("", "fact"), 0.5).chosen] == ["c2"]


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
