"""rag/lang/lists.py: a list item's number, with the cases where it must not match."""

from __future__ import annotations

import pytest

from rag.lang.lists import ITEM


@pytest.mark.parametrize("sentence, rest", [
    ("1. 组织科普活动", "组织科普活动"), ("2、开展培训", "开展培训"), ("（一）总体要求", "总体要求"), ("(3)经费保障", "经费保障"),
    ("十二、附则", "附则"),
    ("2023年开展科普活动", "2023年开展科普活动"),  # a year is no item number
    ("一是加强组织领导", "一是加强组织领导"),  # 一是 introduces a point in prose, not a numbered item
    ("12.5万人次参加", "12.5万人次参加"),  # a decimal figure
])
def test_item_number(sentence, rest):
    assert ITEM.sub("", sentence) == rest
