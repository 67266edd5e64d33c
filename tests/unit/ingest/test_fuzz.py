"""Property-based fuzzing of the text pipeline: decoding, cleaning and chunking never crash, and
chunking never loses text of a clean document."""

from __future__ import annotations

import os
import re

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from rag.ingest.chunking import chunk_document
from rag.ingest.cleaning import paragraphs
from rag.ingest.loaders import LoadError, _common_share, decode_text
from rag.lang.sentences import CLOSERS, TERMINAL
from rag.lang.text import normalize
from rag.models import Page

# FUZZ_EXAMPLES=5000 for a longer hunt; the default keeps the suite fast. The examples are the same on every
# run (CI must not fail by chance); FUZZ_RANDOM=1 draws new ones.
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "100")),
    derandomize=os.environ.get("FUZZ_RANDOM") != "1",
    deadline=None,
    database=None,  # nothing written into the work tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

HANZI = "科协学会服务创新技术普及工作报告年度全市青少年志愿队专家院士基地建设发展中国人民政府组织活动经济社会"
PUNCT_INNER = "，、：“”《》（）"
# Printable text with no control characters (those make a file "binary" on purpose) and no lone surrogates.
any_text = st.text(st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\ufeff\ufffd"), max_size=300)


# -- decode_text ------------------------------------------------------------------------------------

@FUZZ
@given(st.binary(max_size=3000))
def test_decode_text_never_crashes(data):
    try:
        text = decode_text(data)
    except LoadError as e:
        assert str(e)  # a reason for the user
        return
    assert isinstance(text, str) and "\r" not in text


@FUZZ
@given(any_text, st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-32"]))
def test_decode_text_round_trips_unicode_encodings(text, enc):
    # utf-16 / utf-32 in Python write a BOM. Without one, a UTF-8 text made only of unusual non-Chinese
    # characters is also valid GBK (Hebrew ר is D7 A8 = GBK 专): in a Chinese corpus, GBK wins.
    if enc == "utf-8" and not text.isascii() and not re.search(r"[\u3400-\u9fff\U00020000-\U0003134f]", text):
        assume(_common_share(text) >= 0.9)
    expected = text.replace("\r\n", "\n").replace("\r", "\n")
    try:
        assert decode_text(text.encode(enc)) == expected
    except LoadError:
        # Only text that is mostly exotic (format/unassigned/private use characters) may be refused.
        assert sum(not ch.isprintable() for ch in text) > 0


def distinct_hanzi(text: str) -> int:
    return len({ch for ch in text if ch in HANZI})


chinese_text = st.text(st.sampled_from(HANZI + PUNCT_INNER + "。！？；\n 0123456789abcXYZ"), min_size=4, max_size=400)


@FUZZ
@given(chinese_text, st.sampled_from(["gbk", "gb18030", "utf-16-le", "utf-16-be"]))
@example("一二三四五六七八九十" * 3, "utf-16-le")
def test_decode_text_chinese_in_legacy_encodings(text, enc):
    # Chinese prose (at least 4 hanzi) in GBK or BOM-less UTF-16 comes back exactly. UTF-16 bytes that
    # are all ASCII (中 is 2D 4E: "-N") are read as ASCII unless full of control codes: left alone here.
    data = text.encode(enc)
    assume(sum(ch in HANZI for ch in text) >= 4 and not data.isascii())
    assert decode_text(data) == text


@FUZZ
@given(st.lists(st.tuples(chinese_text, st.sampled_from(["utf-8", "gbk"])), min_size=1, max_size=6))
def test_decode_text_mixed_utf8_and_gbk_lines(parts):
    lines = [t.replace("\n", " ") for t, _ in parts]
    data = b"\n".join(line.encode(enc) for line, (_, enc) in zip(lines, parts))
    # Prose, not one character repeated: "专专专专" in UTF-8 is equally plausible GBK, so no rule can tell.
    assume(distinct_hanzi("".join(lines)) >= 4)
    try:
        got = decode_text(data).split("\n")
    except LoadError:
        raise AssertionError(f"refused: {data!r}")
    # Lines with a few hanzi are recognised in their own encoding.
    for want, have in zip(lines, got):
        if distinct_hanzi(want) >= 4:
            assert have == want


# -- paragraphs / chunk_document on arbitrary input ------------------------------------------------

@FUZZ
@given(st.lists(st.tuples(any_text, st.one_of(st.none(), st.integers(1, 500))), max_size=5),
       st.booleans(), st.integers(1, 600), st.integers(0, 200))
def test_cleaning_and_chunking_never_crash(pages, pdf, size, overlap):
    paras = paragraphs([Page(t, n) for t, n in pages], pdf=pdf)
    for p in paras:
        assert p.text.strip()
    chunks = chunk_document(paras, "fuzz/文件.txt", size, overlap)
    assert len({c.id for c in chunks}) == len(chunks)
    for c in chunks:
        assert c.index_text  # c.text may be empty: see test_no_whitespace_only_chunks


def test_no_whitespace_only_chunks():
    # Regression: a hard cut inside a run of spaces used to produce a chunk with empty text.
    paras = paragraphs([Page("甲" * 400 + " " * 400 + "乙。")])
    chunks = chunk_document(paras, "a.txt", 400, 80)
    assert all(c.text.strip() for c in chunks), [c.text[:10] for c in chunks]


# -- no text loss on clean documents ----------------------------------------------------------------

hanzi_run = st.text(st.sampled_from(HANZI), min_size=1, max_size=25)
sentence = st.builds(
    lambda parts, inner, end: "".join(p + (inner[i] if i < len(inner) else "") for i, p in enumerate(parts)) + end,
    st.lists(hanzi_run, min_size=1, max_size=4),
    st.lists(st.sampled_from(["，", "、", "：", "1", "2024年", "“科创中国”", "（试点）", "《纲要》", " AI ", "１２３", "——"]),
             max_size=3),
    st.sampled_from(["。", "！", "？", "；", "……", "。”", "！）", "?", ";", ""]),
)
paragraph = st.lists(sentence, min_size=1, max_size=8).map("".join)
numerals = "一二三四五六七八九十"
heading = st.one_of(
    st.builds(lambda n, t: f"第{numerals[n]}章 {t}", st.integers(0, 9), hanzi_run),
    st.builds(lambda n, t: f"{numerals[n]}、{t}", st.integers(0, 9), hanzi_run),
    st.builds(lambda n, t: f"（{numerals[n]}）{t}", st.integers(0, 9), hanzi_run),
    st.builds(lambda n, t: f"{n}. {t}", st.integers(1, 20), hanzi_run),
    st.builds(lambda n, t: f"第{numerals[n]}条 {t}", st.integers(0, 9), paragraph),
    st.builds(lambda d, t: "#" * d + " " + t, st.integers(1, 3), hanzi_run),
    st.builds(lambda m, t: f"{m}{t}", st.sampled_from(["■ ", "● ", "(1)", "（1）", "- ", "※"]), paragraph),
    st.builds(lambda t: f"——{t}", hanzi_run),  # a byline
    hanzi_run,  # a short unpunctuated line: a plain heading
)
document = st.lists(st.one_of(paragraph, paragraph, heading, st.just(""), st.sampled_from(["。", "……", "——"])),
                    min_size=1, max_size=25).map("\n".join)


def _squash(s: str) -> str:
    return "".join(s.split())


def _norm(s: str) -> str:
    # paragraphs() drops a paragraph whose normalized form (NFKC: full/half width) repeats an earlier one.
    return _squash(normalize(s))


def _pieces(text: str) -> list[str]:
    """Sentences of a paragraph (whitespace removed), a markdown heading marker dropped."""
    text = re.sub(r"^#+\s", "", text.strip())
    closers = re.escape(CLOSERS)
    return [_squash(p) for p in re.findall(rf"[^{TERMINAL}]*[{TERMINAL}]+[{closers}]*|[^{TERMINAL}]+$", text) if _squash(p)]


@FUZZ
@given(document, st.sampled_from([(400, 80), (120, 30), (60, 0), (300, 60)]), st.booleans(), st.integers(1, 3))
@example("一、总体要求\n全市科协系统深入开展科普工作。\n\n（一）工作目标\n建成科普基地五十二个！", (60, 0), False, 1)
def test_chunking_loses_no_text(text, size_overlap, pdf, n_pages):
    size, overlap = size_overlap
    lines = text.split("\n")
    step = -(-len(lines) // n_pages)
    pages = [Page("\n".join(lines[i : i + step]), i // step + 1 if pdf else None) for i in range(0, len(lines), step)]
    paras = paragraphs(pages, pdf=pdf)
    # 1. Cleaning keeps every line (rejoined into a paragraph, or an identical duplicate elsewhere).
    para_views = [_norm(p.text) for p in paras]
    for line in text.split("\n"):
        if _norm(line):
            assert any(_norm(line) in v for v in para_views), f"paragraphs() lost line {line!r}"
    chunks = chunk_document(paras, "报告.txt", size, overlap)
    views = [_squash(f"{c.title}{c.heading}{c.text}") for c in chunks]
    # 2. Every non-whitespace character survives chunking.
    lost = set(_norm(text).replace("#", "")) - set(_norm("".join(views)))
    assert not lost, f"lost characters {sorted(lost)}"
    # 3. Every sentence that fits a chunk is found whole in one chunk (title + heading + text).
    for p in paras:
        for piece in _pieces(p.text):
            if len(piece) <= size // 2:
                assert any(piece in v for v in views), f"sentence lost or split: {piece!r} of paragraph {p.text!r}"
