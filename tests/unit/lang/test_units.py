"""rag/lang/units.py: which measure words count the same kind of quantity, and the longest-first regex."""

from __future__ import annotations

import re

import pytest

from rag.lang import units


@pytest.mark.parametrize("a, b, same", [
    ("人", "名", True), ("元", "万元", True), ("场", "次", True), ("支", "家", True),  # both items
    ("个", "人", True), ("", "场", True), ("万", "元", True),  # 个 / 万 / none fit anything
    ("人", "场", False), ("元", "人", False), ("天", "次", False), ("平方米", "个人", False),  # must not match
])
def test_same_quantity(a, b, same):
    assert units.same_quantity(a, b) is same


@pytest.mark.parametrize("text, unit", [("多少万元", "万元"), ("多少人次", "人次"), ("多少万", "万"), ("多少场次", "场次")])
def test_longest_measure_word_is_read(text, unit):
    assert re.search(f"多少({units.ALTERNATION})", text).group(1) == unit
