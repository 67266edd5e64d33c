"""Question-side rules, table-driven with the cases where each must not fire: Chinese numerals,
places named in a question, and follow-up rewriting."""

import pytest

from rag.answer.followup import list_points, rewrite_followup
from rag.index.tokenizer import Tokenizer
from rag.lang.numbers import parse_cn_int
from rag.lang.places import question_places

GAZ = frozenset({"青岛", "济宁", "连云港", "聊城"})


@pytest.fixture(scope="module")
def is_place():
    return Tokenizer().is_known_place


@pytest.mark.parametrize("text, value", [
    ("十一", 11), ("二十三", 23), ("一百零五", 105), ("两万", 20000), ("三百七十四", 374), ("十", 10),
    ("一千零一", 1001), ("一亿二千万", 120_000_000), ("12", 12),
    ("一是", None), ("进一步", None), ("二三", None), ("", None), ("万", None),
    ("三十三十", None), ("十十", None), ("①", None), ("²", None), ("一百二十", 120), ("两万三千", 23000),
])
def test_parse_cn_int(text, value):
    assert parse_cn_int(text) == value


@pytest.mark.parametrize("q, places", [
    ("青岛市科协组建了多少支科技志愿服务队", {"青岛"}),
    ("烟台市科协2023年的预算", {"烟台"}),  # not in the corpus, a place all the same
    ("连云港市科协开展了哪些学术活动", {"连云港"}),
    # Must not fire: words that end in 市/省, and 我省/本市/各市.
    ("科协如何服务城市发展", set()),
    ("如何节省经费", set()),
    ("超市里的科普活动", set()),
    ("请问我省科协有多少会员", set()),
    ("请问本市有多少学会", set()),
    ("各市科协开展了什么活动", set()),
])
def test_question_places(q, places, is_place):
    assert question_places(q, GAZ, is_place) == places


HIST_CITY = [("青岛市科协组建了多少支志愿服务队", "组建374支科技志愿服务队[1]。")]
HIST_YEAR = [("2022年青岛市科协组建了多少支志愿服务队", "组建374支[1]。")]
HIST_LIST = [("四服务一加强包括哪些内容", "服务科技工作者；服务创新驱动发展战略；服务公民科学素质提高[1]。")]
HIST_NUMBERED = [("有哪些举措", "1. 建设科普基地；2. 组建服务队；3. 开展科普日活动[1]。")]
HIST_PROSE = [("科协做了什么", "科协开展了调研[1]。科协举办了论坛[2]。")]
HIST_ACTIVITY = [("科协在社区开展了哪些活动", "开展了科普讲座[1]。")]


@pytest.mark.parametrize("q, hist, expected", [
    ("那济宁呢？", HIST_CITY, "济宁市科协组建了多少支志愿服务队"),
    ("那济宁市呢", HIST_CITY, "济宁市科协组建了多少支志愿服务队"),
    ("那烟台呢", HIST_CITY, "烟台市科协组建了多少支志愿服务队"),  # a place jieba knows
    ("那2023年呢", HIST_YEAR, "2023年青岛市科协组建了多少支志愿服务队"),
    ("那2023年呢", HIST_CITY, "2023年青岛市科协组建了多少支志愿服务队"),  # no year to swap: added
    ("第二点具体说说", HIST_LIST, "服务创新驱动发展战略（四服务一加强包括哪些内容）"),
    ("第三项呢", HIST_NUMBERED, "开展科普日活动（有哪些举措）"),
    ("它的成员有哪些", HIST_CITY, "青岛市科协组建了多少支志愿服务队，它的成员有哪些"),
    ("它的效果如何？", HIST_CITY, "青岛市科协组建了多少支志愿服务队，它的效果如何？"),
    ("他们怎么样", HIST_CITY, "青岛市科协组建了多少支志愿服务队，他们怎么样"),
    # Must not fire: a non-place is never swapped for a place, 条 is an article, prose has no points.
    ("那科普基地呢", HIST_CITY, "那科普基地呢"),
    ("那学校呢", HIST_ACTIVITY, "那学校呢"),
    ("第三条是什么", HIST_NUMBERED, "第三条是什么"),
    ("第二点呢", HIST_PROSE, "第二点呢"),
    ("第十一点呢", HIST_NUMBERED, "第十一点呢"),  # read as 11: beyond the list, asked as it is
    ("什么是三型组织", HIST_CITY, "什么是三型组织"),
    ("那济宁呢", [], "那济宁呢"),
])
def test_rewrite_followup(q, hist, expected, is_place):
    assert rewrite_followup(q, hist, GAZ, is_place) == expected


def test_list_points_reads_eleven_items():
    answer = "；".join(f"第{i}项内容" for i in range(1, 13))
    assert len(list_points(answer)) == 12
    hist = [("有哪些", answer)]
    assert rewrite_followup("第十一点呢", hist, GAZ) == "第11项内容（有哪些）"


@pytest.mark.parametrize("word, place", [("烟台市", True), ("济宁", True), ("城市", True), ("烟台", False),
                                         ("务城", False), ("何节", False), ("科普基地", False)])
def test_is_known_place_ignores_guessed_tags(word, place, is_place):
    assert is_place(word) is place
