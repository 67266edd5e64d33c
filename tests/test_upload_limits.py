"""Hostile uploads: a megabyte on disk that describes gigabytes. Each file is refused (or, for spreadsheet
cells, cut short with a warning) with a Chinese reason naming the limit, while it is being read: the
memory and the time a file costs stay bounded, the other files are indexed, and with isolated parsing
a file that exhausts its child process's memory ceiling or time is reported as failed.

The files are written here, small on disk: raw XML streamed into copies of real files made by openpyxl,
python-pptx and python-docx, and a PDF written by hand."""

from __future__ import annotations

import random
import re
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from rag.index.indexer import index_corpus
from rag.ingest import limits, worker
from rag.ingest.loaders import LoadError
from rag.ingest.pipeline import chunk_file
from rag.settings import load_settings

MB = 2**20
SHEET_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
P_NS = 'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main" ' \
       'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships" ' \
       'xmlns:p="http://schemas.openxmlformats.org/presentationml/2006/main"'
W_NS = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'


# -- measuring ----------------------------------------------------------------------------------------
def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class PeakRss:
    """This process's peak resident memory above its level at the start, sampled every 5 ms."""

    def __enter__(self):
        self.base = self.peak = _rss_mb()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._sample, daemon=True)
        self._t.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_mb())
            self._stop.wait(0.005)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss_mb())

    @property
    def growth(self) -> float:
        return self.peak - self.base


# -- writing hostile files ----------------------------------------------------------------------------
def _replace_part(src: Path, dst: Path, part: str, write: Callable, level: int = 6) -> None:
    """A copy of a real OOXML file with one part replaced by content streamed into the archive."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as zout:
        for info in zin.infolist():
            if info.filename != part:
                zout.writestr(info.filename, zin.read(info.filename))
        with zout.open(part, "w", force_zip64=True) as f:
            write(f)


def _base_xlsx(tmp: Path) -> Path:
    import openpyxl

    p = tmp / "base.xlsx"
    if not p.exists():
        wb = openpyxl.Workbook()
        wb.active.title = "数据"
        wb.active.append(["名称", "数量"])
        wb.save(p)
    return p


def _sheet(rows, dimension: str = "A1:ALL20000") -> Callable:
    def write(f):
        f.write(f'<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="{SHEET_NS}">'
                f'<dimension ref="{dimension}"/><sheetData>'.encode())
        for row in rows():
            f.write(row)
        f.write(b"</sheetData></worksheet>")
    return write


def xlsx_cells_over_cap(p: Path, tmp: Path) -> None:
    """300 rows x 1,000 numbers: 300,000 cells, past the 200,000 per sheet; random, so ~1 MB zipped."""
    rnd = random.Random(1)

    def rows():
        for _ in range(300):
            yield b"<row>" + b"".join(b"<c><v>%d</v></c>" % rnd.randrange(10**6) for _ in range(1000)) + b"</row>"
    _replace_part(_base_xlsx(tmp), p, "xl/worksheets/sheet1.xml", _sheet(rows), level=1)


def xlsx_attack_20k_by_1k(p: Path, tmp: Path) -> None:
    """The measured attack: 20,000 x 1,000 cells (~1 MB zipped, 330 MB of sheet XML)."""
    row = b"<row>" + b"<c><v>1</v></c>" * 1000 + b"</row>"
    _replace_part(_base_xlsx(tmp), p, "xl/worksheets/sheet1.xml", _sheet(lambda: (row for _ in range(20_000))), level=9)


def xlsx_one_wide_row(p: Path, tmp: Path) -> None:
    """One row of 20,000 cells, more than Excel's 16,384 columns (the reader builds a whole row at once:
    one of 10 million cells would be gigabytes)."""
    _replace_part(_base_xlsx(tmp), p, "xl/worksheets/sheet1.xml",
                  _sheet(lambda: iter([b"<row>" + b"<c><v>2</v></c>" * 20_000 + b"</row>"])))


def xlsx_far_cells(p: Path, tmp: Path) -> None:
    """Each row one cell in the last column (XFD): rows padded to 16,384 cells each."""
    row = b'<row><c r="XFD1"><v>3</v></c></row>'
    _replace_part(_base_xlsx(tmp), p, "xl/worksheets/sheet1.xml",
                  _sheet(lambda: (row for _ in range(5000)), "A1:XFD1048576"))


def _base_pptx(tmp: Path) -> Path:
    from pptx import Presentation

    p = tmp / "base.pptx"
    if not p.exists():
        deck = Presentation()
        slide = deck.slides.add_slide(deck.slide_layouts[5])
        slide.shapes.title.text = "标题"
        deck.save(p)
    return p


def _shapes(n: int) -> Callable:
    def write(f):
        f.write(f'<?xml version="1.0" encoding="UTF-8"?><p:sld {P_NS}><p:cSld><p:spTree>'
                '<p:nvGrpSpPr><p:cNvPr id="1" name=""/><p:cNvGrpSpPr/><p:nvPr/></p:nvGrpSpPr><p:grpSpPr/>'.encode())
        block = []
        for i in range(n):
            block.append(f'<p:sp><p:nvSpPr><p:cNvPr id="{i + 2}" name="t"/><p:cNvSpPr txBox="1"/><p:nvPr/></p:nvSpPr>'
                         f'<p:spPr/><p:txBody><a:bodyPr/><a:p><a:r><a:t>科普{i}</a:t></a:r></a:p></p:txBody></p:sp>')
            if len(block) == 1000:
                f.write("".join(block).encode())
                block = []
        f.write("".join(block).encode())
        f.write(b"</p:spTree></p:cSld></p:sld>")
    return write


def pptx_many_shapes(p: Path, tmp: Path) -> None:
    """One slide with 20,000 text boxes (4 MB of slide XML, under the size cap)."""
    _replace_part(_base_pptx(tmp), p, "ppt/slides/slide1.xml", _shapes(20_000))


def pptx_attack_1_5m_shapes(p: Path, tmp: Path) -> None:
    """The measured attack: 1.5 million shapes, ~300 MB of slide XML in ~1 MB."""
    shape = ('<p:sp><p:nvSpPr><p:cNvPr id="2" name="t"/><p:cNvSpPr txBox="1"/><p:nvPr/></p:nvSpPr><p:spPr/>'
             '<p:txBody><a:bodyPr/><a:p><a:r><a:t>科普</a:t></a:r></a:p></p:txBody></p:sp>').encode() * 1000

    def write(f):
        f.write(f'<?xml version="1.0" encoding="UTF-8"?><p:sld {P_NS}><p:cSld><p:spTree>'.encode())
        for _ in range(1500):
            f.write(shape)
        f.write(b"</p:spTree></p:cSld></p:sld>")
    _replace_part(_base_pptx(tmp), p, "ppt/slides/slide1.xml", write, level=9)


def pptx_xml_named_as_image(p: Path, tmp: Path) -> None:
    """70 MB of XML in a part named like an image (a library picks parts by declared content type, so
    the name proves nothing): the size cap for XML applies by content."""
    rnd = random.Random(5)

    def write(f):
        f.write(b'<?xml version="1.0"?><x>')
        for _ in range(70):
            block = bytearray(b"<a>xxxxxxxxxxxx</a>" * (MB // 19))
            block[3::19] = _random_letters(MB // 19, rnd, 4)
            f.write(block)
        f.write(b"</x>")
    _replace_part(_base_pptx(tmp), p, "ppt/media/image9.png", write)


def _base_docx(tmp: Path) -> Path:
    import docx

    p = tmp / "base.docx"
    if not p.exists():
        d = docx.Document()
        d.add_paragraph("正文。")
        d.save(p)
    return p


def _document(paragraph: bytes, n: int) -> Callable:
    def write(f):
        f.write(f'<?xml version="1.0" encoding="UTF-8"?><w:document {W_NS}><w:body>'.encode())
        block = paragraph * 1000
        for _ in range(n // 1000):
            f.write(block)
        f.write(b"</w:body></w:document>")
    return write


def docx_expands_past_cap(p: Path, tmp: Path) -> None:
    """document.xml of 276 MB (under the old 300 MB cap) in ~1 MB: the measured 20-minute attack."""
    para = "<w:p><w:r><w:t>科学技术协会组织开展科普活动，推进学会改革。</w:t></w:r></w:p>".encode()
    _replace_part(_base_docx(tmp), p, "word/document.xml", _document(para, 276 * MB // len(para)), level=9)


def _random_letters(n: int, rnd: random.Random, k: int = 2) -> bytes:
    """n letters out of the first k: enough disorder to compress like XML (10-30x), not like a bomb."""
    return rnd.randbytes(n).translate(bytes(97 + b % k for b in range(256)))


def docx_many_elements(p: Path, tmp: Path) -> None:
    """35 MB (under the size cap) of 5 million empty elements with random names (so it does not
    compress like a bomb): a tree of ~750 MB in lxml."""
    rnd = random.Random(3)

    def write(f):
        f.write(f'<?xml version="1.0" encoding="UTF-8"?><w:document {W_NS}><w:body>'.encode())
        for _ in range(50):
            block = bytearray(b"<w:xx/>" * 100_000)
            block[3::7] = _random_letters(100_000, rnd)
            block[4::7] = _random_letters(100_000, rnd)
            f.write(block)
        f.write(b"</w:body></w:document>")
    _replace_part(_base_docx(tmp), p, "word/document.xml", write)


def docx_ratio_bomb(p: Path, tmp: Path) -> None:
    """10 MB of spaces in one paragraph (under the size cap), inflating 1000-fold."""
    _replace_part(_base_docx(tmp), p, "word/document.xml",
                  _document(b"<w:p><w:r><w:t>" + b" " * 10_000 + b"</w:t></w:r></w:p>", 1000), level=9)


def docx_big_text(p: Path, tmp: Path, mb: int) -> None:
    """`mb` MB of paragraphs of random digits: within every limit, but a large tree to build."""
    rnd = random.Random(4)

    def write(f):
        f.write(f'<?xml version="1.0" encoding="UTF-8"?><w:document {W_NS}><w:body>'.encode())
        for _ in range(mb * MB // (1000 * 77)):
            text = _random_letters(40_000, rnd)
            f.write(b"".join(b"<w:p><w:r><w:t>" + text[i:i + 40] + b"</w:t></w:r></w:p>" for i in range(0, 40_000, 40)))
        f.write(b"</w:body></w:document>")
    _replace_part(_base_docx(tmp), p, "word/document.xml", write, level=1)


def pdf_pages(p: Path, n: int) -> None:
    """A valid PDF of `n` pages sharing one content stream, written by hand (milliseconds for thousands)."""
    content = "BT /F1 12 Tf 72 720 Td (Page) Tj ET".encode()
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % (5 + i) for i in range(n)) + b"] /Count %d >>" % n,
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
            b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream"]
    objs += [b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
             b"/Contents 4 0 R >>"] * n
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    p.write_bytes(bytes(out))


def pdf_10k_pages(p: Path, tmp: Path) -> None:
    """The measured attack: 10,000 pages (67 s and 2.7 GB before)."""
    pdf_pages(p, 10_000)


def pdf_over_page_cap(p: Path, tmp: Path) -> None:
    pdf_pages(p, limits.MAX_PDF_PAGES + 1)


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
    _replace_part(_base_pptx(tmp_path), p, "ppt/media/image9.png", lambda f: f.write(photo))
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
