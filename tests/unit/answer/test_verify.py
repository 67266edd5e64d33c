"""Citation verification rules, table-driven: where each must fire and where it must not."""

import pytest

from rag.answer.verify import (
    has_content,
    strip_placeholders,
    support,
    verify_citations,
)
from rag.lang.numbers import figures as numbers
from rag.models import Chunk, Hit


@pytest.mark.parametrize("sentence, passage, supported", [
    ("成立于12年前", "协会成立于2012年。", False),  # "12" is not the number 2012
    ("共有1,200名会员", "共有1200名会员。", True),  # the same number written two ways
    ("共有1200名会员", "共有1,200名会员。", True),
    ("增长3.5个百分点", "增长3.5个百分点。", True),
    ("增长3个百分点", "增长3.5个百分点。", False),  # 3 is not 3.5
    ("建成科普基地52个", "建成科普基地52个，新增12家。", True),
    ("建成科普基地２５个", "建成科普基地25个。", True),  # full-width digits are the same number
    ("34，56个", "团队数量分别为12，34，56个。", True),  # numbers after a Chinese comma
    ("2. 开展调研活动", "（二）开展调研活动。", True),  # the answer's own list marker is no figure
])
def test_numbers_are_compared_as_numbers(sentence, passage, supported):
    assert (support(sentence, passage) >= 0.5) is supported


@pytest.mark.parametrize("text, expected", [
    ("2012年", {2012.0}), ("1,200人", {1200.0}), ("第3.5版", {3.5}), ("十二项", set()), ("", set()),
    ("分别为12，34，56个", {12.0, 34.0, 56.0}), ("2017，2018，2019年", {2017.0, 2018.0, 2019.0}),
    ("1. 举办论坛", set()), ("（2）开展调研", set()), ("3、评选12篇论文", {12.0}),
])
def test_numbers(text, expected):
    assert numbers(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("科协组织[编号]。", "科协组织。"), ("见[资料]和[1]", "见和[1]"), ("【1】开放型", "开放型"),
    ("第[2]项", "第[2]项"),  # a real citation marker stays
    ("数组a[i]", "数组a[i]"),  # not a placeholder
])
def test_placeholders(text, expected):
    assert strip_placeholders(text) == expected


@pytest.mark.parametrize("text, readable", [("", False), ("。", False), ("[1]。", False), (" \n", False), ("好[1]。", True)])
def test_has_content(text, readable):
    assert has_content(text) is readable


def _hit(text: str, rank: int = 1) -> Hit:
    return Hit(Chunk(f"id{rank}", "a.txt", "", "", None, rank, text), 1.0 / rank, rank=rank)


def test_invented_figure_dropped_others_kept():
    hits = [_hit("青岛市科协组建了科技志愿服务队374支。"), _hit("志愿者开展科普讲座。", 2)]
    v = verify_citations("青岛市科协组建了科技志愿服务队374支[2]。共有会员98765人[1]。志愿者开展科普讲座。", hits)
    assert "98765" not in v.text and v.dropped == ["共有会员98765人。"]
    assert v.text.startswith("青岛市科协组建了科技志愿服务队374支[1]。")  # re-pointed to the passage that says it
    assert "志愿者开展科普讲座[2]。" in v.text  # an uncited supported sentence gets its citation


def test_a_numbered_list_over_passages_numbered_otherwise_keeps_its_items():
    hits = [_hit("（一）举办学术论坛；（二）开展专题调研；（三）评选优秀论文。")]
    v = verify_citations("1. 举办学术论坛[1]\n2. 开展专题调研[1]\n3. 评选优秀论文[1]", hits)
    assert not v.dropped and v.text.count("[1]") == 3
