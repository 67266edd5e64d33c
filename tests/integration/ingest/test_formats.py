"""The files offices have: tables in DOCX and PDF, legacy .doc, spreadsheets, slides, web pages, and
encodings that must never be indexed as mojibake. Real files: fixtures from ../shared, or files written
here by the libraries that write them (python-docx, openpyxl, python-pptx, reportlab)."""

from __future__ import annotations

import shutil

import pytest
from conftest import shared

from rag.answer.assistant import Assistant
from rag.index.indexer import index_corpus
from rag.ingest import office, word97
from rag.ingest.chunking import chunk_document
from rag.ingest.cleaning import paragraphs
from rag.ingest.loaders import LoadError, Skipped, decode_text, load
from rag.lang import tables
from rag.search.retrieval import Retriever
from rag.settings import load_settings


def _chunks(path, source=None):
    d = load(path, source or path.name)
    return chunk_document(paragraphs(d.pages, pdf=path.suffix == ".pdf"), source or path.name), d


# -- tables ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("grid,want", [
    ([["年份", "经费"], ["2023", "120万元"]], [["年份", "经费"], ["2023", "120万元"]]),
    # a header spanning two columns (None to its right) and a category spanning two rows (None below)
    ([["类别", "经费", None], ["科普", "2022", "100"], [None, "2023", "120"]],
     [["类别", "经费", "经费"], ["科普", "2022", "100"], ["科普", "2023", "120"]]),
    # empty rows and columns go; a cell's line break inside Chinese goes
    ([["主体信用\n评级", "", "机构"], [None, None, None], ["AA+", "", "中诚信"]], [["主体信用评级", "机构"], ["AA+", "中诚信"]]),
])
def test_fill(grid, want):
    assert tables.fill(grid) == want


@pytest.mark.parametrize("grid,ok", [
    ([["序号", "名称"], ["1", "工商银行"]], True),
    ([["只有一列"], ["x"]], False),
    ([["a", None, None, None], [None, None, None, "b"]], False),  # a layout frame, mostly empty
    ([["x" * 400, "y"], ["1", "2"]], False),  # a whole text column in one cell
])
def test_plausible_tables(grid, ok):
    assert tables.plausible(grid) is ok


def test_row_sentence_names_the_columns():
    assert tables.row_sentence(["年份", "科普活动经费"], ["2023年", "120万元"]) == "年份：2023年；科普活动经费：120万元"


def _funds_docx(path):
    import docx

    d = docx.Document()
    d.add_heading("测试市科协经费情况", level=1)
    d.add_paragraph("近三年科普经费投入情况见下表。")
    t = d.add_table(rows=4, cols=3)
    for i, row in enumerate([["年份", "科普活动经费", "参加人数"], ["2021年", "80万元", "2100人次"],
                             ["2022年", "100万元", "3000人次"], ["2023年", "120万元", "5000人次"]]):
        for j, v in enumerate(row):
            t.cell(i, j).text = v
    d.add_paragraph("经费全部用于基层科普活动。")
    d.save(str(path))


@pytest.fixture(scope="module")
def table_kb(tmp_path_factory, embedder):
    root = tmp_path_factory.mktemp("tables")
    corpus = root / "corpus"
    corpus.mkdir()
    _funds_docx(corpus / "经费.docx")
    shutil.copy(shared("fixtures", "pdf", "chinese-tables_bond_prospectus.pdf"), corpus / "募集说明书.pdf")
    s = load_settings(env={}, corpus_dir=corpus, index_dir=root / "index")
    rep = index_corpus(s, embedder=embedder)
    assert not rep.failed, rep.failed
    r = Retriever(s, embedder)
    yield s, r, Assistant(s, r)
    r.close()


def test_docx_table_chunks_repeat_the_header_and_answer_a_cell(table_kb):
    s, r, a = table_kb
    chunks = [c for c in r.snapshot().chunks if c.source == "经费.docx" and c.kind == "table"]
    assert chunks and all(c.text.startswith("| 年份 | 科普活动经费 | 参加人数 |") for c in chunks)
    ans = a.ask("2023年科普活动经费是多少？")
    assert not ans.refused and "120万元" in ans.answer and "100万元" not in ans.answer, ans.answer
    assert ans.citations[0].source == "经费.docx"


@pytest.mark.xfail(strict=True, reason="阅读模型的已知不足：读 markdown 表格行不如读正文，“工商银行的授信总额”被正文里发行人的"
                   "授信总额（372.53亿元）抢先；此前的规则式回答答对。strict：模型改进后此测试通过，须去掉标记")
def test_pdf_table_question_is_answered_from_the_right_row(table_kb):
    s, r, a = table_kb
    chunks = [c for c in r.snapshot().chunks if c.source == "募集说明书.pdf" and c.kind == "table"]
    assert any("| 序号 | 金融机构名称 | 授信总额 | 已使用情况 | 剩余额度 |" in c.text for c in chunks)
    ans = a.ask("工商银行的授信总额是多少？")
    assert not ans.refused and "330,435.30" in ans.answer, ans.answer
    assert ans.citations[0].page == 1


@pytest.mark.slow
def test_pdf_tables_measured_on_the_fixtures():
    """pdfplumber's ruled-table detection on the four fixture PDFs: the prospectus's two tables and the
    ship rules' one are found; the research report's layout frames are not taken for tables."""
    found = {}
    for name in ("chinese-tables_bond_prospectus.pdf", "2list_1table_CCS_smart_ship_rules.pdf",
                 "test_rearch_report_broker_research.pdf", "simplified_chinese_colophon.pdf"):
        chunks, _ = _chunks(shared("fixtures", "pdf", name))
        found[name] = len({c.text.split("\n", 1)[0] for c in chunks if c.kind == "table"})
    assert found["chinese-tables_bond_prospectus.pdf"] == 2
    assert found["2list_1table_CCS_smart_ship_rules.pdf"] == 1
    assert found["simplified_chinese_colophon.pdf"] == 0
    assert found["test_rearch_report_broker_research.pdf"] <= 2  # the 评级 table, never the page frame


# -- page furniture ---------------------------------------------------------------------------------
def _pages(*texts):
    from rag.models import Page

    return [Page(t, n) for n, t in enumerate(texts, 1)]


@pytest.mark.parametrize("line, bare", [
    ("251", True), ("— 3 —", True), ("- 12 -", True), ("2 / 4", True), ("第 3 页", True), ("第3页 共12页", True),
    ("Page 5 of 9", True),
    # must not fire: figures and items that are text
    ("2023年", False), ("12345", False), ("3.5", False), ("共3项", False), ("1、总则", False),
])
def test_page_number_lines(line, bare):
    from rag.ingest.furniture import PAGE_NUMBER

    assert bool(PAGE_NUMBER.match(line)) is bare


def test_running_headers_and_footers_go_body_lines_stay():
    from rag.ingest.furniture import strip

    body = ["一、总体情况\n全年开展活动120场。", "二、主要做法\n资料来源：年报\n组建服务队30支。",
            "三、下一步\n资料来源：年报\n继续推进。", "四、附则\n本办法自印发之日起施行。"]
    pages = _pages(*(f"公司点评 高测股份\n{n} / 4 请务必阅读正文\n{b}\n{n}" for n, b in enumerate(body, 1)))
    out = strip(pages)
    text = "\n".join(p.text for p in out)
    assert "请务必阅读正文" not in text and "公司点评" not in text and [p.page for p in out] == [1, 2, 3, 4]
    assert all(not p.text.rstrip().endswith(str(p.page)) for p in out)  # the bare page numbers
    # must not fire: a line on only half of the pages, and every body line
    assert text.count("资料来源：年报") == 2 and all(line in text for b in body for line in b.split("\n"))
    # one page has nothing repeated to compare: only its bare page number goes
    assert strip(_pages("募集说明书\n第七章 企业资信状况\n正文。\n251"))[0].text == "募集说明书\n第七章 企业资信状况\n正文。"
    # a line repeated in the middle of pages is text, not furniture
    mid = _pages(*(f"标题{n}\n甲\n乙\n丙\n重复的正文句子。\n丁\n戊\n己" for n in range(3)))
    assert all("重复的正文句子" in p.text for p in strip(mid))
    # lines of one kind all down every page (numbered items): their first and last are no header or footer
    items = _pages(*("\n".join(f"填充行 {i}：内容" for i in range(n * 10, n * 10 + 10)) for n in range(3)))
    assert [p.text for p in strip(items)] == [p.text for p in items]


@pytest.mark.slow
def test_pdf_fixtures_lose_their_page_furniture():
    """Measured on the four fixture PDFs (README): no chunk is a bare page number or headed by a running
    header or footer; the broker report's five furniture-headed chunks and the two page-number chunks are gone."""
    from rag.ingest.furniture import PAGE_NUMBER

    for name in ("chinese-tables_bond_prospectus.pdf", "2list_1table_CCS_smart_ship_rules.pdf",
                 "test_rearch_report_broker_research.pdf", "simplified_chinese_colophon.pdf"):
        chunks, _ = _chunks(shared("fixtures", "pdf", name))
        assert chunks and not [c.text for c in chunks if PAGE_NUMBER.match(c.text.strip())], name
        heads = [h.replace(" ", "") for c in chunks for h in (c.heading or "").split(" > ")]
        assert not [h for h in heads if "请务必阅读正文" in h or h == "公司点评高测股份（688556.SH）"], name
    report = "\n".join(c.text for c in _chunks(shared("fixtures", "pdf", "test_rearch_report_broker_research.pdf"))[0])
    assert "请务必阅读正文之后的信息披露和法律声明" not in report and "硅片切割" in report


def test_table_citation_card_is_a_table():
    from rag.models import Answer, Citation
    from rag.serve.render import answer_cards, render_cards

    text = "| 年份 | 经费 |\n|---|---|\n| 2022年 | 100万元 |\n| 2023年 | 120万元 |"
    a = Answer("q", "年份：2023年；经费：120万元[1]。", False,
               [Citation(1, "经费.docx", None, "", text, spans=[(text.index("| 2023年"), len(text))])], [])
    html = render_cards(answer_cards(a), a.refused, a.generation)
    assert "<table class='cite-table'>" in html and "<th>年份</th>" in html
    assert "<tr class='marked'><td>2023年</td><td>120万元</td></tr>" in html
    assert "<tr><td>2022年</td>" in html


# -- legacy and other formats ---------------------------------------------------------------------
def test_legacy_doc_is_converted_or_skipped_with_the_reason(monkeypatch, tmp_path):
    doc = shared("fixtures", "docx", "核电厂定期安全审查指南_第1部分_通用要求_征求意见稿.doc")
    if office.soffice() or shutil.which("antiword"):
        chunks, d = _chunks(doc)
        text = "".join(c.text for c in chunks)
        assert "核电厂定期安全评价" in text and "通用要求" in text and len(text) > 5000
    monkeypatch.setattr(shutil, "which", lambda name: None)
    # No converter: the Word 97 text stream itself, measured against the fixture's .docx twin.
    chunks, _ = _chunks(doc)
    twin = shared("fixtures", "docx", "核电厂定期安全审查指南_第1部分_通用要求_征求意见稿.docx")
    import difflib
    import re

    import docx

    def squeeze(t: str) -> str:
        return re.sub(r"[\s|]+", "", t)

    ours = squeeze(word97.read_text(doc))
    theirs = squeeze("\n".join(p.text for p in docx.Document(str(twin)).paragraphs))
    assert difflib.SequenceMatcher(None, ours, theirs, autojunk=False).ratio() >= 0.95
    assert "核电厂定期安全评价" in "".join(c.text for c in chunks)
    sheet = tmp_path / "表格.et"  # a WPS spreadsheet: only LibreOffice converts it
    shutil.copy(doc, sheet)
    with pytest.raises(Skipped, match="LibreOffice"):
        load(sheet)


def test_xlsx_sheets_become_tables_with_merged_cells_filled(tmp_path):
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "经费"
    ws.append(["类别", "年份", "金额"])
    ws.append(["科普活动", "2022年", "100万元"])
    ws.append([None, "2023年", "120万元"])
    ws.merge_cells("A2:A3")
    ws2 = wb.create_sheet("人员")
    ws2.append(["姓名", "职务"])
    ws2.append(["张三", "秘书长"])
    wb.save(tmp_path / "统计.xlsx")
    chunks, d = _chunks(tmp_path / "统计.xlsx")
    assert [p.page for p in d.pages] == [1, 2]
    t = [c for c in chunks if c.kind == "table"]
    assert "| 科普活动 | 2023年 | 120万元 |" in t[0].text  # the merged 类别 cell filled downwards
    assert t[0].heading == "经费" and t[1].heading == "人员"


def test_csv_is_a_table(tmp_path):
    (tmp_path / "名单.csv").write_bytes("单位,人数\n青岛市科协,30\n济宁市科协,25\n".encode("gbk"))
    chunks, _ = _chunks(tmp_path / "名单.csv")
    assert chunks[0].kind == "table" and "| 青岛市科协 | 30 |" in chunks[0].text


def test_pptx_slides_and_notes_with_slide_numbers(tmp_path):
    from pptx import Presentation

    deck = Presentation()
    for title, body, notes in (("科普工作总结", "全年开展科普活动300场。", "讲稿：重点说明社区活动。"),
                               ("明年计划", "建设10个科普示范社区。", "")):
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
        if notes:
            slide.notes_slide.notes_text_frame.text = notes
    deck.save(tmp_path / "汇报.pptx")
    chunks, d = _chunks(tmp_path / "汇报.pptx")
    assert [p.page for p in d.pages] == [1, 2]
    by_page = {c.page: c for c in chunks}
    assert "300场" in by_page[1].text and "重点说明社区活动" in by_page[1].text
    assert "10个科普示范社区" in by_page[2].text and by_page[2].heading == "明年计划"


PAGE = """<!DOCTYPE html><html><head><title>科协新闻</title><style>.x{color:red}</style>
<script>var tracking = "不应被索引的脚本";</script></head><body>
<nav class="menu"><a href="/">首页</a><a href="/news">新闻中心</a></nav>
<div class="header">网站导航栏目</div>
<h1>青岛市科协开展科普进社区活动</h1>
<p>5月20日，青岛市科协组织科技志愿者走进社区，开展科普宣传。</p>
<table><tr><th>活动</th><th>人数</th></tr><tr><td>科普讲座</td><td>200</td></tr></table>
<div class="footer">版权所有 © 青岛市科协</div></body></html>"""


@pytest.mark.parametrize("name", ["新闻.html", "新闻.htm", "网页另存为.txt"])
def test_html_main_text_only(tmp_path, name):
    (tmp_path / name).write_text(PAGE, encoding="utf-8")
    chunks, _ = _chunks(tmp_path / name)
    text = "\n".join(c.text + c.heading for c in chunks)
    assert "青岛市科协组织科技志愿者走进社区" in text and "| 科普讲座 | 200 |" in text
    for junk in ("<p>", "tracking", "color:red", "新闻中心", "网站导航栏目", "版权所有"):
        assert junk not in text, junk


@pytest.mark.parametrize("text,is_html", [
    (PAGE, True),
    ("科协工作总结。<b>重点</b>是社区科普。", False),  # a stray tag in prose is not a page
    ("# 标题\n\n正文内容。", False),
])
def test_looks_like_html(text, is_html):
    assert office.looks_like_html(text) is is_html


def test_unsupported_types_are_skipped_with_the_reason(tmp_path):
    (tmp_path / "文件.numbers").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(Skipped, match="不支持的文件类型：.numbers"):
        load(tmp_path / "文件.numbers")


# -- OFD ------------------------------------------------------------------------------------------
def _ofd(name):
    from rag.ingest.pipeline import chunk_file
    from rag.settings import Settings

    path = shared("fixtures", "ofd", name)
    return chunk_file(path, name, Settings(isolate_parsing=False))


def test_ofd_reply_has_its_number_date_pages_and_no_page_footer():
    got = _ofd("路桥区卫生局_批复_两页.ofd")
    assert got.meta.number == "路卫发〔2011〕76号" and got.meta.published == "2011-03-10"
    text = "\n".join(c.text for c in got.chunks)
    assert "同意张阿三同志辞职" in text and "— 1 —" not in text and "— 2 —" not in text
    assert {c.page for c in got.chunks} == {1, 2}


def test_ofd_letter_lines_are_rejoined_into_its_paragraph_and_dated():
    got = _ofd("关于加快南货场铁路涵洞下穿建设的函.ofd")
    assert got.meta.title == "关于加快南货场铁路涵洞下穿建设的函" and got.meta.published == "2023-07-12"
    # the sentence runs over three visual lines in the file
    assert any("蚌山区东海大道北侧、解放路西侧居住地块计划于7月份出让，按照7月7日张铭副市长主持召开" in c.text for c in got.chunks)


def test_ofd_pages_follow_the_document_page_list_not_file_names():
    import re
    import zipfile

    path = shared("fixtures", "ofd", "诗句_十一页.ofd")
    d = load(path)
    assert [p.page for p in d.pages] == list(range(1, 12))
    with zipfile.ZipFile(path) as z:
        listed = re.findall(r'BaseLoc="([^"]+)"', z.read("Doc_1/Document.xml").decode())
    assert listed != sorted(listed)  # the fixture's point: name order is not reading order
    assert d.pages[0].text.startswith("1、一日不见兮") and d.pages[1].text.startswith("23、")


def test_every_ofd_fixture_loads_with_text():
    for name in ("关于加快南货场铁路涵洞下穿建设的函.ofd", "多页文档_四页.ofd", "市政府文件处理单.ofd", "诗句_十一页.ofd",
                 "路桥区卫生局_批复_两页.ofd"):
        got = _ofd(name)
        assert got.chunks and all(c.text.strip() for c in got.chunks), name
    assert "市委主要领导同志调研后续落实事项的通知" in "\n".join(c.text + c.heading for c in _ofd("市政府文件处理单.ofd").chunks)


@pytest.mark.parametrize("parts, reason", [
    ({"Doc_0/Document.xml": "<Document/>"}, "缺少 OFD.xml"),
    ({"OFD.xml": "<OFD><DocBody/></OFD>"}, "缺少 DocRoot"),
    ({"OFD.xml": "<OFD><DocBody><DocRoot>Doc_0/Document.xml</DocRoot></DocBody></OFD>"}, "缺少部件 Doc_0/Document.xml"),
    ({"OFD.xml": "<OFD><DocBody><DocRoot>Doc_0/Document.xml</DocRoot></DocBody></OFD>", "Doc_0/Document.xml": "<Doc"},
     "不是有效的 XML"),
])
def test_broken_ofd_files_fail_with_the_reason(tmp_path, parts, reason):
    import zipfile

    path = tmp_path / "坏.ofd"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in parts.items():
            z.writestr(name, data)
    with pytest.raises(LoadError, match=reason):
        load(path)
    (tmp_path / "假.ofd").write_bytes("这不是 zip".encode())
    with pytest.raises(LoadError, match="OFD"):
        load(tmp_path / "假.ofd")


# -- encodings ------------------------------------------------------------------------------------
TRAD = ("中華人民共和國科學技術普及法規定，科學技術協會是科普工作的主要社會力量。各級人民政府應當加強對科普工作的領導，"
        "將科普工作納入國民經濟和社會發展計劃，為開展科普工作創造良好的環境和條件。") * 3
SIMP = "科普大篷车开进乡村学校。孩子们体验了虚拟现实设备，参加人数超过三百人。\n" * 8


def test_big5_is_read_as_traditional_chinese():
    w: list[str] = []
    assert decode_text(TRAD.encode("big5"), w) == TRAD and not w


def test_a_few_bad_bytes_are_replaced_with_a_warning():
    data = SIMP.encode()
    w: list[str] = []
    text = decode_text(data[:50] + b"\xff\xfe\xfa" + data[50:], w)
    assert "参加人数超过三百人" in text and text.count("\ufffd") >= 3
    assert w and "无法按 UTF-8 解码" in w[0]


@pytest.mark.parametrize("data, repaired", [
    # a short UTF-8 notice with three stray bytes: repaired like a long one
    ("通知：明天下午三点在三楼会议室召开科普工作会议。".encode()[:12] + b"\xff\xfe\xfa" + "通知：明天下午三点在三楼会议室召开科普工作会议。".encode()[12:], True),
    # must not fire: short GBK texts, or a GBK line among UTF-8 ones, are read as GBK, not as damaged UTF-8
    ("召开科普会议".encode("gbk") + b"\n" + "专专专专专\n通知明天开会".encode(), False),
    ("通知：明天下午三点在三楼会议室召开科普工作会议。".encode("gbk"), False),
    ("通知：明天下午三点在三楼会议室召开科普工作会议，请各部门准时参加。".encode("gb18030"), False),
])
def test_short_texts_with_stray_bytes(data, repaired):
    w: list[str] = []
    text = decode_text(data, w)
    assert ("会议" in text or "會議" in text) and ("\ufffd" in text) is repaired
    assert bool(w) is repaired


def test_nul_bytes_are_removed_with_a_warning(tmp_path):
    (tmp_path / "a.md").write_bytes(SIMP.encode()[:60] + b"\x00\x00" + SIMP.encode()[60:])
    d = load(tmp_path / "a.md")
    assert "\x00" not in d.pages[0].text and "参加人数" in d.pages[0].text
    assert any("NUL" in w for w in d.warnings)


def test_mojibake_is_refused_never_indexed():
    garbled = TRAD.encode("big5").decode("gbk", errors="ignore")  # what GBK makes of Big5 bytes
    with pytest.raises(LoadError, match="乱码"):
        decode_text(garbled.encode("utf-8"))


def test_gbk_and_utf8_still_decode_cleanly():
    for enc in ("utf-8", "gbk", "gb18030"):
        w: list[str] = []
        assert decode_text(SIMP.encode(enc), w) == SIMP and not w


def test_warnings_reach_the_index_report(tmp_path, embedder):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "坏字节.txt").write_bytes(SIMP.encode()[:50] + b"\xff\xfe" + SIMP.encode()[50:])
    (corpus / "繁体.txt").write_bytes(TRAD.encode("big5"))
    s = load_settings(env={}, corpus_dir=corpus, index_dir=tmp_path / "index")
    rep = index_corpus(s, embedder=embedder)
    assert not rep.failed and "坏字节.txt" in rep.warned and "繁体.txt" not in rep.warned
    r = Retriever(s, embedder)
    try:
        hits = r.search("科學技術協會", 3)
        assert hits[0].chunk.source == "繁体.txt" and "科學技術協會" in hits[0].chunk.text
    finally:
        r.close()


@pytest.mark.parametrize("raw, want", [
    ("第一段\r第二段\r", "第一段\n第二段"),
    ("见\x13 HYPERLINK \"http://x\" \x14网站\x15。", "见网站。"),  # a field shows its result, not its code
    ("页码\x13 PAGE \x15。", "页码。"),  # a field without a result leaves nothing
    ("\x13 A \x13 B \x14内\x15 \x14外\x15", "外"),  # nested fields
    ("甲\x07乙\x07\x07丙\x07丁\x07\x07", "甲 | 乙\n丙 | 丁"),  # table cells and rows
    ("行内\x0b换行\x0c分页", "行内\n换行\n分页"),
    ("无控制字符的文字", "无控制字符的文字"),  # must not change plain text
    ("a\tb", "a | b"),
])
def test_word97_plain_text(raw, want):
    assert word97.plain(raw) == want
