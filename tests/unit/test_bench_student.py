"""bench/student.py's two rules: which of e5's layers a student keeps, and how training passages are cut."""

from __future__ import annotations

import sys

import pytest
from conftest import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT))
from bench.student import kept_layers, pieces  # noqa: E402


@pytest.mark.parametrize("n,want", [
    (1, [11]), (2, [0, 11]), (3, [0, 6, 11]), (4, [0, 4, 7, 11]), (6, [0, 2, 4, 7, 9, 11]), (12, list(range(12))),
])
def test_a_student_keeps_evenly_spaced_layers_ending_with_the_last(n, want):
    assert kept_layers(n) == want


@pytest.mark.parametrize("n", [0, 13, -1])
def test_a_student_cannot_keep_no_layer_or_more_than_the_model_has(n):
    with pytest.raises(ValueError):
        kept_layers(n)


@pytest.mark.parametrize("text,size,want", [
    ("甲" * 50 + "。" + "乙" * 50 + "。", 400, ["甲" * 50 + "。" + "乙" * 50 + "。"]),  # fits: one piece
    ("甲" * 50 + "。" + "乙" * 50 + "。", 60, ["甲" * 50 + "。", "乙" * 50 + "。"]),  # cut at the sentence end
    ("甲" * 50 + "！”" + "乙" * 50 + "？", 60, ["甲" * 50 + "！”", "乙" * 50 + "？"]),  # the product's sentence ends
    ("短句。" * 3, 400, []),  # under 40 characters: not a passage
    ("甲" * 500, 100, ["甲" * 500]),  # no sentence end: never cut inside a sentence
])
def test_training_passages_are_cut_after_sentence_ends(text, size, want):
    assert pieces(text, size) == want
