"""The in-document viewer (rag/serve/viewer.py): the document rebuilt from its chunks, the cited passage
marked in place, and a PDF passage boxed on its page image. The route's token checks are in test_api."""

from __future__ import annotations

import pytest
from conftest import shared

from rag.models import Chunk
from rag.serve import viewer


def _chunk(i: int, text: str, heading: str = "", page: int | None = None, kind: str = "") -> Chunk:
    return Chunk(id=f"c{i}", source="d.txt", title="", heading=heading, page=page, position=i, text=text, kind=kind)


@pytest.mark.parametrize("a, b, want", [
    ("第一句。第二句。", "第二句。第三句。", 4),  # the chunker's overlap
    ("第一句。第二句。", "第三句。第四句。", 0),  # none
    ("一二三。", "。四五六", 0),  # one character in common is chance, not overlap
    ("abc", "abc", 3),
])
def test_overlap(a, b, want):
    assert viewer.overlap(a, b) == want


def test_rebuild_keeps_each_overlap_once_and_tables_whole():
    cs = [_chunk(0, "甲。乙。丙。"), _chunk(1, "丙。丁。"), _chunk(2, "| 列 |\n|---|\n| 丁。 |", kind="table"), _chunk(3, "戊。")]
    doc = viewer.rebuild(cs)
    assert doc.text == "甲。乙。丙。丁。\n\n| 列 |\n|---|\n| 丁。 |\n\n戊。"
    for c, start in zip(cs, doc.starts):
        assert doc.text[start:start + len(c.text)] == c.text


def test_text_body_marks_the_cited_sentence_and_escapes_the_document():
    cs = [_chunk(0, "第一条 为了<b>规范</b>管理，制定本办法。", heading="第一章 总则"),
          _chunk(1, "制定本办法。第二条 本办法所称画廊，是指科普宣传栏。", heading="第一章 总则", page=2)]
    text = cs[1].text
    a = text.index("第二条")
    body = viewer.text_body(cs, 1, [(a, len(text))])
    assert "<b>" not in body and "&lt;b&gt;" in body
    assert "<mark>第二条 本办法所称画廊，是指科普宣传栏。</mark>" in body.replace("<span class='passage'>", "").replace("</span>", "")
    assert body.count("<h2>第一章 总则</h2>") == 1 and "第 2 页" in body
    assert body.index("id='hit'") < body.index("<mark>")
    assert body.count("制定本办法。") == 1  # the overlap once


def test_text_body_without_the_passage_shows_the_document_unmarked():
    cs = [_chunk(0, "甲。"), _chunk(1, "乙。")]
    body = viewer.text_body(cs, None, [])
    assert "<mark>" not in body and "id='hit'" not in body and "甲。" in body and "乙。" in body


def test_render_says_when_the_cited_passage_is_gone(tmp_path):
    cs = [_chunk(0, "现在的内容。")]
    out = viewer.render(tmp_path / "d.txt", "d.txt", cs, viewer.passage_key("从前的内容。"), [])
    assert "找不到" in out and "现在的内容。" in out
    out = viewer.render(tmp_path / "d.txt", "d.txt", cs, viewer.passage_key("现在的内容。"), [])
    assert "找不到" not in out and "passage" in out


@pytest.mark.parametrize("spans, want", [("3-9", [(3, 9)]), ("3-9,12-20", [(3, 9), (12, 20)]), ("9-3", []),
                                          ("x", []), ("", []), ("1-2;rm", [])])
def test_parse_spans(spans, want):
    assert viewer.parse_spans(spans) == want


def test_view_link_keeps_the_token_and_names_the_passage():
    link = viewer.view_link("/files/default/a.txt?t=TOKEN", "段落。", [(0, 3)])
    assert link.startswith("/view/default/a.txt?t=TOKEN&c=") and link.endswith("&s=0-3#hit")
    assert viewer.view_link("https://elsewhere/x", "段落。") == ""


def test_pdf_passage_is_boxed_on_its_page():
    pdf = shared("fixtures", "pdf", "chinese-tables_bond_prospectus.pdf")
    import pdfplumber

    with pdfplumber.open(str(pdf)) as doc:
        lines = [ln.strip() for ln in (doc.pages[0].extract_text() or "").splitlines() if len(ln.strip()) >= 8]
    target = lines[len(lines) // 2]
    boxes, w, h = viewer.pdf_boxes(pdf, 1, [target])
    assert boxes and w > 0 and h > 0
    for x, y, bw, bh in boxes:
        assert 0 <= x <= 100 and 0 <= y <= 100 and 0 < bw <= 100 and 0 < bh <= 100
    assert viewer.pdf_boxes(pdf, 1, ["这句话不在这一页上出现过。"])[0] == []  # must not box what the page lacks
    html = viewer.pdf_body(pdf, _chunk(0, "前文。" + target, page=1), [(3, 3 + len(target))])
    assert html.count("data:image/png;base64,") == 1 and "class='box' id='hit'" in html
