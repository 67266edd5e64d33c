"""Hostile uploads: a megabyte on disk that describes gigabytes. Each file is refused (or, for spreadsheet
cells, cut short with a warning) with a Chinese reason naming the limit, while it is being read: the
memory and the time a file costs stay bounded, the other files are indexed, and with isolated parsing
a file that exhausts its child process's memory ceiling or time is reported as failed.

The files are written here, small on disk: raw XML streamed into copies of real files made by openpyxl,
python-pptx and python-docx, and a PDF written by hand."""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from rag.index.indexer import index_corpus
from rag.ingest import limits, worker
from rag.ingest.loaders import LoadError
from rag.ingest.pipeline import chunk_file
from rag.settings import load_settings

from hostile_files import (  # tests/hostile_files.py (tests/ is on the path)
    MB,
    PeakRss,
    base_pptx,
    replace_part,
    docx_big_text,
    docx_expands_past_cap,
    docx_many_elements,
    docx_ratio_bomb,
    pdf_10k_pages,
    pdf_over_page_cap,
    pdf_pages,
    pptx_attack_1_5m_shapes,
    pptx_many_shapes,
    pptx_xml_named_as_image,
    xlsx_attack_20k_by_1k,
    xlsx_cells_over_cap,
    xlsx_far_cells,
    xlsx_one_wide_row,
)

NORMAL = "正常文件.txt"
NORMAL_TEXT = "市科协组织科技志愿者走进社区，开展科普宣传活动，参加群众约三百人。"


def normal_docx(p: Path, tmp: Path) -> None:
    import docx

    d = docx.Document()
    d.add_heading("科协年度工作总结", 1)
    d.add_paragraph("全年开展学会服务与科普活动一百二十场，覆盖群众五万人次。")
    d.save(p)


@dataclass
class Case:
    name: str
    write: Callable[[Path, Path], None]
    expect: str  # "failed": refused with `reason`; "cut": indexed, with a warning matching `reason`
    reason: str  # a regex on the reason (or warning): names the limit
    max_mb: float = 400  # peak RSS growth of the process that parses it, in-process
    max_seconds: float = 20


CASES = [  # reasons: regexes, with the limits' current values filled in ({MAX_...})
    Case("cells_over_cap.xlsx", xlsx_cells_over_cap, "cut", "非空单元格超过每个工作表 {MAX_SHEET_CELLS} 个的上限"),
    Case("attack_20k_x_1k.xlsx", xlsx_attack_20k_by_1k, "failed", "解压后过大.*超过解压后 {MAX_UNPACKED_MB} MB 的上限"),
    Case("one_wide_row.xlsx", xlsx_one_wide_row, "failed", "超过 {MAX_ROW_CELLS} 个单元格"),
    Case("far_cells.xlsx", xlsx_far_cells, "cut", "含空单元格）超过每个工作表 {MAX_SHEET_SPAN} 个的上限"),
    Case("many_shapes.pptx", pptx_many_shapes, "failed", "形状过多（超过每页 {MAX_SLIDE_SHAPES} 个"),
    Case("attack_1_5m_shapes.pptx", pptx_attack_1_5m_shapes, "failed", "解压后过大.*超过解压后 {MAX_UNPACKED_MB} MB 的上限"),
    Case("xml_as_image.pptx", pptx_xml_named_as_image, "failed", "解压后过大（文字与结构部分在 ppt/media/image9.png 处"),
    Case("expands_276mb.docx", docx_expands_past_cap, "failed", "解压后过大.*超过解压后 {MAX_UNPACKED_MB} MB 的上限.*压缩炸弹"),
    Case("many_elements.docx", docx_many_elements, "failed", "XML 元素超过 {MAX_XML_ELEMENTS} 个的上限"),
    Case("ratio_bomb.docx", docx_ratio_bomb, "failed", "压缩比异常.*超过 {MAX_ZIP_RATIO} 倍的上限"),
    Case("pages_10000.pdf", pdf_10k_pages, "failed", "页数过多：共 10000 页，超过每个文件 {MAX_PDF_PAGES} 页的上限"),
    Case("pages_over_cap.pdf", pdf_over_page_cap, "failed", "超过每个文件 {MAX_PDF_PAGES} 页的上限"),
]


def _reason(c: Case) -> str:
    return c.reason.format(**limits.snapshot(), MAX_UNPACKED_MB=limits.MAX_UNPACKED_BYTES // MB)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    """The cases written once into a folder of their own (a few seconds)."""
    d = tmp_path_factory.mktemp("hostile")
    scratch = tmp_path_factory.mktemp("scratch")
    for c in CASES:
        c.write(d / c.name, scratch)
        assert (d / c.name).stat().st_size < 5 * MB, c.name  # small uploads, all of them
    return d


def _settings(root: Path, corpus: Path, **kw):
    return load_settings(env={}, corpus_dir=corpus, index_dir=root / "index", **kw)


# -- each limit, in the caller's process: memory and time bounded without the worker ------------------
@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_each_hostile_file_stops_at_its_limit_in_process(hostile, tmp_path, c):
    s = _settings(tmp_path, hostile, isolate_parsing=False)
    t = time.perf_counter()
    with PeakRss() as rss:
        try:
            got = chunk_file(hostile / c.name, c.name, s)
            outcome, said = "cut", " / ".join(got.warnings)
        except LoadError as e:
            outcome, said = "failed", str(e)
    seconds = time.perf_counter() - t
    assert outcome == c.expect, said
    assert re.search(_reason(c), said), said
    assert seconds < c.max_seconds, f"{c.name}: {seconds:.1f} s"
    assert rss.growth < c.max_mb, f"{c.name}: peak RSS +{rss.growth:.0f} MB"


def test_media_parts_have_their_own_cap(tmp_path, monkeypatch):
    """Images (not parsed, held as bytes) count against MAX_MEDIA_BYTES, not against the XML cap."""
    p = tmp_path / "相册.pptx"
    photo = random.Random(6).randbytes(2 * MB)  # incompressible, like a JPEG
    replace_part(base_pptx(tmp_path), p, "ppt/media/image9.png", lambda f: f.write(photo))
    monkeypatch.setattr(limits, "MAX_UNPACKED_BYTES", 1 * MB)
    limits.check_zip(p, "pptx")  # 2 MB of image under a 1 MB XML cap: fine
    monkeypatch.setattr(limits, "MAX_MEDIA_BYTES", 3 * MB // 2)  # the declared 2 MB pass (under 1 + 1.5 MB)
    with pytest.raises(limits.LimitExceeded, match=r"图片等其他部分超过解压后 \d+ MB 的上限"):
        limits.check_zip(p, "pptx")


def test_chunk_and_text_caps_and_the_clock(tmp_path, monkeypatch):
    """Chunks per file, characters per file and seconds per file, each with its reason (caps lowered)."""
    p = tmp_path / "长文.txt"
    p.write_text("\n".join(f"第{i}段：市科协组织科技志愿者走进社区，开展科普宣传活动，参加群众约三百人。" * 4 for i in range(400)),
                 encoding="utf-8")
    s = load_settings(env={}, corpus_dir=tmp_path, index_dir=tmp_path / "index", isolate_parsing=False)
    assert len(chunk_file(p, p.name, s).chunks) > 50
    monkeypatch.setattr(limits, "MAX_CHUNKS", 50)
    with pytest.raises(LoadError, match="分块超过每个文件 50 段的上限"):
        chunk_file(p, p.name, s)
    monkeypatch.setattr(limits, "MAX_CHUNKS", 20_000)
    monkeypatch.setattr(limits, "MAX_TEXT_CHARS", 10_000)
    with pytest.raises(LoadError, match="文字超过每个文件 10000 字的上限"):
        chunk_file(p, p.name, s)
    monkeypatch.setattr(limits, "MAX_TEXT_CHARS", 10_000_000)
    pdf = tmp_path / "慢.pdf"
    pdf_pages(pdf, 50)
    with pytest.raises(LoadError, match=r"解析超时：超过每个文件 0\.001 秒的上限"):
        chunk_file(pdf, pdf.name, s.replace(parse_seconds=0.001))


# -- the whole run: isolated parsing, the other files indexed, the parent's memory flat ---------------
def test_indexing_hostile_uploads_with_isolated_parsing(hostile, tmp_path, embedder, monkeypatch):
    # Lower sheet caps, which the child processes get from this one: a sheet cut at 200,000 cells is
    # legitimately indexed, and tokenising that much is the other tests' cost, not this one's.
    monkeypatch.setattr(limits, "MAX_SHEET_CELLS", 20_000)
    monkeypatch.setattr(limits, "MAX_SHEET_SPAN", 200_000)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for c in CASES:
        (corpus / c.name).write_bytes((hostile / c.name).read_bytes())
    (corpus / NORMAL).write_text(NORMAL_TEXT, encoding="utf-8")
    normal_docx(corpus / "工作总结.docx", tmp_path)
    s = _settings(tmp_path, corpus)
    assert s.isolate_parsing
    t = time.perf_counter()
    with PeakRss() as rss:
        rep = index_corpus(s, embedder=embedder, wait=False)  # vectors: not this test's subject
    seconds = time.perf_counter() - t
    assert NORMAL in rep.added and "工作总结.docx" in rep.added, rep.failed
    for c in CASES:
        if c.expect == "failed":
            assert c.name in rep.failed, (c.name, rep.warned.get(c.name), rep.skipped.get(c.name))
            assert re.search(_reason(c), rep.failed[c.name]), rep.failed[c.name]
        else:
            assert c.name in rep.added and any(re.search(_reason(c), w) for w in rep.warned[c.name]), rep.warned.get(c.name)
    assert rss.growth < 300, f"parent peak RSS +{rss.growth:.0f} MB"
    assert seconds < 60, seconds


def test_memory_ceiling_fails_the_file_and_the_others_are_indexed(hostile, tmp_path, embedder):
    """A ceiling too small for a file (not for the child's start): the child's MemoryError is the file's
    failure, with the ceiling named; the next file is parsed by a fresh child and indexed."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    big = corpus / "大文档.docx"
    docx_big_text(big, tmp_path, 30)  # 30 MB of XML, within every limit: ~300 MB to parse
    normal_docx(corpus / "工作总结.docx", tmp_path)
    (corpus / NORMAL).write_text(NORMAL_TEXT, encoding="utf-8")
    s = _settings(tmp_path, corpus, parse_memory_mb=200)
    out = worker.run(corpus / "工作总结.docx", "工作总结.docx", s)  # the ceiling lets a child start and parse
    assert out.error is None and out.parsed.chunks, out.error
    assert 0 < out.peak_mb <= out.peak_vm_mb < 200, (out.peak_mb, out.peak_vm_mb)
    out = worker.run(big, big.name, s)
    assert out.peak_vm_mb <= 200 and "内存超过上限（200 MB）" in str(out.error), (out.error, out.peak_vm_mb)
    rep = index_corpus(s, embedder=embedder, wait=False)  # vectors: not this test's subject
    assert "大文档.docx" in rep.failed and "内存超过上限（200 MB）" in rep.failed["大文档.docx"], rep.failed
    assert "工作总结.docx" in rep.added and NORMAL in rep.added


@pytest.mark.slow
def test_a_stuck_parser_is_killed_at_the_timeout(tmp_path, monkeypatch):
    """A parser stuck where no clock is checked (KEXIE_FAULT=parse_hang): the parent kills the child."""
    p = tmp_path / "工作总结.docx"
    normal_docx(p, tmp_path)
    s = load_settings(env={}, corpus_dir=tmp_path, index_dir=tmp_path / "index", parse_seconds=1)
    monkeypatch.setattr(worker, "GRACE_SECONDS", 1)
    monkeypatch.setenv("KEXIE_FAULT", "parse_hang")
    t = time.perf_counter()
    out = worker.run(p, p.name, s)
    assert time.perf_counter() - t < 10
    assert out.error is not None and "解析超时" in str(out.error) and "1 秒" in str(out.error)


def test_limits_reach_the_child_and_small_text_stays_in_process(tmp_path, monkeypatch):
    p = tmp_path / "长文.docx"
    import docx

    d = docx.Document()
    for i in range(200):
        d.add_paragraph(f"第{i}段：市科协组织科技志愿者走进社区，开展科普宣传活动，参加群众约三百人。" * 3)
    d.save(p)
    s = load_settings(env={}, corpus_dir=tmp_path, index_dir=tmp_path / "index")
    monkeypatch.setattr(limits, "MAX_CHUNKS", 10)  # lowered here, applied there
    out = worker.run(p, p.name, s)
    assert out.error is not None and "10 段的上限" in str(out.error)
    small = tmp_path / "短.txt"
    small.write_text(NORMAL_TEXT, encoding="utf-8")
    assert worker.isolated(p, s) and not worker.isolated(small, s)
    assert not worker.isolated(p, s.replace(isolate_parsing=False))
