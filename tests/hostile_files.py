"""Hostile files written small on disk that describe gigabytes (raw XML streamed into copies of real files made
by openpyxl, python-pptx and python-docx, and a PDF written by hand), and a peak-memory probe: shared by the
upload-limit and the security tests."""

from __future__ import annotations

import random
import threading
import zipfile
from pathlib import Path
from typing import Callable

from rag.ingest import limits

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
def replace_part(src: Path, dst: Path, part: str, write: Callable, level: int = 6) -> None:
    """A copy of a real OOXML file with one part replaced by content streamed into the archive."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as zout:
        for info in zin.infolist():
            if info.filename != part:
                zout.writestr(info.filename, zin.read(info.filename))
        with zout.open(part, "w", force_zip64=True) as f:
            write(f)


def base_xlsx(tmp: Path) -> Path:
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
    replace_part(base_xlsx(tmp), p, "xl/worksheets/sheet1.xml", _sheet(rows), level=1)


def xlsx_attack_20k_by_1k(p: Path, tmp: Path) -> None:
    """The measured attack: 20,000 x 1,000 cells (~1 MB zipped, 330 MB of sheet XML)."""
    row = b"<row>" + b"<c><v>1</v></c>" * 1000 + b"</row>"
    replace_part(base_xlsx(tmp), p, "xl/worksheets/sheet1.xml", _sheet(lambda: (row for _ in range(20_000))), level=9)


def xlsx_one_wide_row(p: Path, tmp: Path) -> None:
    """One row of 20,000 cells, more than Excel's 16,384 columns (the reader builds a whole row at once:
    one of 10 million cells would be gigabytes)."""
    replace_part(base_xlsx(tmp), p, "xl/worksheets/sheet1.xml",
                  _sheet(lambda: iter([b"<row>" + b"<c><v>2</v></c>" * 20_000 + b"</row>"])))


def xlsx_far_cells(p: Path, tmp: Path) -> None:
    """Each row one cell in the last column (XFD): rows padded to 16,384 cells each."""
    row = b'<row><c r="XFD1"><v>3</v></c></row>'
    replace_part(base_xlsx(tmp), p, "xl/worksheets/sheet1.xml",
                  _sheet(lambda: (row for _ in range(5000)), "A1:XFD1048576"))


def base_pptx(tmp: Path) -> Path:
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
    replace_part(base_pptx(tmp), p, "ppt/slides/slide1.xml", _shapes(20_000))


def pptx_attack_1_5m_shapes(p: Path, tmp: Path) -> None:
    """The measured attack: 1.5 million shapes, ~300 MB of slide XML in ~1 MB."""
    shape = ('<p:sp><p:nvSpPr><p:cNvPr id="2" name="t"/><p:cNvSpPr txBox="1"/><p:nvPr/></p:nvSpPr><p:spPr/>'
             '<p:txBody><a:bodyPr/><a:p><a:r><a:t>科普</a:t></a:r></a:p></p:txBody></p:sp>').encode() * 1000

    def write(f):
        f.write(f'<?xml version="1.0" encoding="UTF-8"?><p:sld {P_NS}><p:cSld><p:spTree>'.encode())
        for _ in range(1500):
            f.write(shape)
        f.write(b"</p:spTree></p:cSld></p:sld>")
    replace_part(base_pptx(tmp), p, "ppt/slides/slide1.xml", write, level=9)


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
    replace_part(base_pptx(tmp), p, "ppt/media/image9.png", write)


def base_docx(tmp: Path) -> Path:
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
    replace_part(base_docx(tmp), p, "word/document.xml", _document(para, 276 * MB // len(para)), level=9)


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
    replace_part(base_docx(tmp), p, "word/document.xml", write)


def docx_ratio_bomb(p: Path, tmp: Path) -> None:
    """10 MB of spaces in one paragraph (under the size cap), inflating 1000-fold."""
    replace_part(base_docx(tmp), p, "word/document.xml",
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
    replace_part(base_docx(tmp), p, "word/document.xml", write, level=1)


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
