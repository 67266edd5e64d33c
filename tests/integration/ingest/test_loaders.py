
import shutil

import pytest
from conftest import make_pdf, shared

from rag.ingest.loaders import LoadError, Skipped, decode_text, load

TEXT = "中国科协“科创中国”行动。第二句，承接142项任务。"


@pytest.mark.parametrize("enc", ["utf-8", "utf-8-sig", "gb18030", "gbk", "utf-16"])
def test_text_encodings_detected(tmp_path, enc):
    p = tmp_path / f"doc-{enc}.txt"
    p.write_bytes(TEXT.encode(enc))
    assert load(p).pages[0].text == TEXT


def test_gbk_is_not_mistaken_for_another_encoding():
    # Short GBK strings are where statistical detectors guess big5/shift_jis; we must not.
    for s in ["市科协", "科普大篷车进校园", "四服务一加强"]:
        assert decode_text(s.encode("gbk")) == s


def test_binary_named_txt_fails_with_reason(tmp_path):
    p = tmp_path / "x.txt"
    p.write_bytes(bytes(range(256)) * 20)
    with pytest.raises(LoadError, match="二进制|乱码"):
        load(p)


def test_unsupported_and_broken_legacy_files(tmp_path, monkeypatch):
    (tmp_path / "a.numbers").write_bytes(b"x")
    (tmp_path / "b.doc").write_bytes(b"x")
    (tmp_path / "c.xls").write_bytes(b"x")
    with pytest.raises(Skipped, match="不支持"):
        load(tmp_path / "a.numbers")
    with pytest.raises(LoadError, match="xls|损坏|无法读取"):
        load(tmp_path / "c.xls")
    with pytest.raises(LoadError, match="不是有效的 .doc 文件"):  # no converter ever sees a non-Word file
        load(tmp_path / "b.doc")
    (tmp_path / "c.doc").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 4096)  # OLE header, no body
    if shutil.which("antiword") or shutil.which("soffice"):
        with pytest.raises(LoadError, match="无法"):
            load(tmp_path / "c.doc")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(LoadError, match="不是有效的 Word 97"):  # no converter: the Word 97 reader refuses it by name
        load(tmp_path / "c.doc")


def test_empty_file_is_skipped(tmp_path):
    (tmp_path / "e.txt").write_text("  \n\n ", encoding="utf-8")
    with pytest.raises(Skipped):
        load(tmp_path / "e.txt")




def test_pdf_made_in_test_keeps_page_numbers(tmp_path):
    p = tmp_path / "r.pdf"
    make_pdf(p, [["第一页：科协年度报告。"], ["第二页：科技志愿服务队374支。"], ["第三页：结束。"]])
    doc = load(p)
    assert [pg.page for pg in doc.pages] == [1, 2, 3]
    assert "374" in doc.pages[1].text and "科技志愿服务队" in doc.pages[1].text
    assert "第一页" in doc.pages[0].text


def test_truncated_pdf_fails_with_reason(tmp_path):
    p = tmp_path / "t.pdf"
    make_pdf(p, [["内容"]])
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 3])
    with pytest.raises(LoadError):
        load(p)


def test_docx_made_in_test_paragraphs_and_tables_in_order(tmp_path):
    import docx

    d = docx.Document()
    d.add_heading("科协工作总结", level=1)
    d.add_paragraph("第一段：学会改革。")
    t = d.add_table(rows=2, cols=2)
    t.cell(0, 0).text, t.cell(0, 1).text = "项目", "数量"
    t.cell(1, 0).text, t.cell(1, 1).text = "科普基地", "52"
    d.add_paragraph("第二段：表格之后。")
    p = tmp_path / "w.docx"
    d.save(p)
    text = load(p).pages[0].text
    assert text.index("# 科协工作总结") < text.index("第一段") < text.index("科普基地 | 52") < text.index("第二段")


def test_zip_that_is_not_docx(tmp_path):
    import zipfile

    p = tmp_path / "z.docx"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("hello.txt", "x")
    with pytest.raises(LoadError, match="docx"):
        load(p)


@pytest.mark.slow
def test_real_pdfs_reading_order_pages_and_no_doubled_glyphs():
    d = shared("fixtures", "pdf")
    colophon = load(d / "simplified_chinese_colophon.pdf")
    text = colophon.pages[0].text
    # White spacer glyphs used to come out as "监制制"/"主制编": noticed and removed.
    assert "监制制" not in text and "主制编" not in text
    assert colophon.warnings
    assert "".join(text.split()).startswith("监制：中华人民共和国国务院侨务办公室")
    report = load(d / "test_rearch_report_broker_research.pdf")
    assert [p.page for p in report.pages] == [1, 2, 3, 4]
    assert "股票数据" in report.pages[1].text  # white heading text on a coloured bar is kept
    rules = load(d / "2list_1table_CCS_smart_ship_rules.pdf").pages[0].text
    assert rules.index("1.4.1") < rules.index("1.4.2")
    bond = load(d / "chinese-tables_bond_prospectus.pdf").pages[0].text
    assert bond.index("第七章") < bond.index("一、发行人历史信用评级情况")


def test_real_docx_fixtures():
    d = shared("fixtures", "docx")
    for p in sorted(d.glob("*.docx")):
        text = load(p).pages[0].text
        assert len(text) > 1000, p.name
        assert "核电厂" in text
    # the legacy .doc beside them: see test_formats (converted, or skipped naming the converter)


def test_readers_are_one_table_by_extension():
    """The supported list is the readers' table; WPS binaries go to the converter, not to the xlsx/pptx reader."""
    from rag.ingest.loaders import READERS, SUPPORTED

    assert SUPPORTED == tuple(READERS) and len(set(SUPPORTED)) == len(SUPPORTED)
    assert READERS[".et"] is READERS[".doc"] is READERS[".dps"] is READERS[".wps"]
    assert READERS[".xlsx"] is not READERS[".et"] and READERS[".pptx"] is not READERS[".dps"]
    assert READERS[".md"] is READERS[".txt"] is READERS[".html"]
