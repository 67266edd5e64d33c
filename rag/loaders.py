"""Read txt/md/pdf/docx files into Documents; raise LoadError with a user-facing reason."""

from __future__ import annotations

import codecs
import re
import zipfile
from pathlib import Path

from .models import Document, Page

SUPPORTED = (".txt", ".md", ".markdown", ".pdf", ".docx")
# A .docx is a zip; refuse archives that would expand past this (zip bombs).
MAX_DOCX_UNCOMPRESSED = 300 * 1024 * 1024


class LoadError(Exception):
    """A file that cannot be indexed; str() is the reason shown to users."""


class Skipped(LoadError):
    """A file deliberately not indexed (unsupported type, empty...)."""


def load(path: Path, source: str | None = None, ocr: bool = False) -> Document:
    """Load one file. `source` is the name shown in citations (default: the file name)."""
    source = source or path.name
    ext = path.suffix.lower()
    if ext not in SUPPORTED:
        if ext == ".doc":
            raise Skipped("旧版 .doc 格式不支持，请另存为 .docx 后再上传")
        raise Skipped(f"不支持的文件类型：{ext or '无扩展名'}")
    try:
        if ext in (".txt", ".md", ".markdown"):
            doc = Document(source, [Page(decode_text(path.read_bytes()))])
        elif ext == ".pdf":
            doc = _load_pdf(path, source, ocr)
        else:
            doc = _load_docx(path, source)
    except LoadError:
        raise
    except PermissionError:
        raise LoadError("没有读取权限") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise LoadError(f"文件无法读取（{type(e).__name__}: {e}）") from None
    if not any(p.text.strip() for p in doc.pages):
        raise Skipped("文件中没有可提取的文字" + ("（可能是扫描件，可在设置中开启 OCR）" if ext == ".pdf" and not ocr else ""))
    return doc


def decode_text(data: bytes) -> str:
    """Decode text bytes: BOMs first, then UTF-8, then GB18030 (superset of GBK), checked for plausibility."""
    for bom, enc in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            return _check_text(data.decode(enc, errors="replace"))
    if _looks_utf16(data):
        enc = "utf-16-le" if data[1:2] == b"\x00" else "utf-16-be"
        return _check_text(data.decode(enc, errors="replace"))
    if b"\x00" in data[:4096]:
        raise LoadError("不是文本文件（含二进制数据）")
    try:
        return _check_text(data.decode("utf-8"))
    except UnicodeDecodeError:
        pass
    try:
        return _check_text(data.decode("gb18030"))
    except UnicodeDecodeError:
        pass
    # Mixed encodings: decode line by line so one bad line does not lose the file.
    lines = []
    for line in data.split(b"\n"):
        try:
            lines.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(line.decode("gb18030", errors="replace"))
    return _check_text("\n".join(lines))


def _looks_utf16(data: bytes) -> bool:
    sample = data[:4000]
    if len(sample) < 4:
        return False
    even_nul = sample[0::2].count(0) / max(1, len(sample[0::2]))
    odd_nul = sample[1::2].count(0) / max(1, len(sample[1::2]))
    # ASCII-heavy UTF-16 has NULs on one side; Chinese UTF-16 has few NULs, so also try a strict decode.
    if max(even_nul, odd_nul) > 0.3 and min(even_nul, odd_nul) < 0.05:
        return True
    return False


def _check_text(text: str) -> str:
    if not text:
        return text
    sample = text[:20000]
    bad = sum(1 for ch in sample if ch == "\ufffd" or (ord(ch) < 32 and ch not in "\n\r\t\f"))
    if bad / len(sample) > 0.05:
        raise LoadError("不是文本文件或编码无法识别（含大量乱码/控制字符）")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _load_pdf(path: Path, source: str, ocr: bool) -> Document:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted:
            # Many PDFs are "encrypted" with an empty user password (print/copy restrictions only).
            try:
                ok = reader.decrypt("")
            except Exception:
                ok = 0
            if not ok:
                raise LoadError("PDF 已加密，需要密码才能读取")
        pages: list[Page] = []
        warnings: list[str] = []
        for i, page in enumerate(reader.pages, start=1):
            if _drop_invisible_text(page):
                warnings.append(f"第 {i} 页含白色占位字（提取时会变成重影字，如“监制制”），已忽略")
            text = page.extract_text() or ""
            text, fixed = undouble_glyphs(text)
            if fixed:
                warnings.append(f"第 {i} 页提取出重影字（如“监制制”），已合并")
            if not text.strip() and ocr:
                from .ocr import ocr_pdf_page

                text = ocr_pdf_page(path, i)
                pages.append(Page(text, i, ocr=True))
                continue
            pages.append(Page(text, i))
    except LoadError:
        raise
    except PdfReadError as e:
        raise LoadError(f"PDF 文件损坏或不完整（{e}）") from None
    except Exception as e:  # pypdf raises many types on damaged files
        raise LoadError(f"PDF 无法解析（{type(e).__name__}: {e}）") from None
    return Document(source, pages, warnings)


_WHITE = {"rg": [1, 1, 1], "g": [1], "k": [0, 0, 0, 0]}
_SHOW = (b"Tj", b"TJ", b"'", b'"')


def _drop_invisible_text(page) -> bool:
    """Blank out single glyphs painted in white: typesetters pad labels ("监　制") with white glyphs,
    which text extraction would otherwise return as doubled characters ("监制制")."""
    from pypdf.generic import ArrayObject, ByteStringObject, ContentStream, DecodedStreamObject, NameObject

    raw = page.get_contents()
    if raw is None:
        return False
    data = raw.get_data()
    if b" rg" not in data and b" g" not in data and b" k" not in data:
        return False
    content = ContentStream(raw, page.pdf, "bytes")
    white, changed = False, False
    for operands, op in content.operations:
        name = op.decode("latin-1") if isinstance(op, bytes) else str(op)
        if name in _WHITE:
            try:
                white = [float(x) for x in operands] == _WHITE[name]
            except (TypeError, ValueError):
                white = False
        elif op in _SHOW and white:
            # Only single-glyph runs: white headings on coloured bars are real text and stay.
            if op == b"TJ":
                pieces = [x for x in operands[0] if isinstance(x, (str, bytes))]
                if sum(len(x) for x in pieces) <= 2:
                    operands[0] = ArrayObject(x for x in operands[0] if not isinstance(x, (str, bytes)))
                    changed = True
            elif len(operands[-1]) <= 2:
                changed = True
                operands[-1] = ByteStringObject(b"")
    if changed:
        # Only the in-memory page used for extraction changes; the file is never written.
        page[NameObject("/Contents")] = DecodedStreamObject.initialize_from_dictionary({"__streamdata__": content.get_data()})
    return changed


_DOUBLED = re.compile(r"([\u4e00-\u9fff])\1")


def undouble_glyphs(text: str) -> tuple[str, bool]:
    """Collapse glyphs doubled by fake-bold PDFs ("监监制制"), only where doubling dominates a line."""
    out, fixed = [], False
    for line in text.split("\n"):
        cjk = len(re.findall(r"[\u4e00-\u9fff]", line))
        doubled = len(_DOUBLED.findall(line))
        # Real Chinese has few doubled characters (常常, 人人); a doubled line has one per two glyphs.
        if cjk >= 6 and doubled * 2 >= cjk * 0.6:
            line = _DOUBLED.sub(r"\1", line)
            fixed = True
        out.append(line)
    return "\n".join(out), fixed


def _load_docx(path: Path, source: str) -> Document:
    try:
        with zipfile.ZipFile(path) as z:
            total = sum(i.file_size for i in z.infolist())
            if total > MAX_DOCX_UNCOMPRESSED:
                raise LoadError(f"docx 解压后过大（{total // 2**20} MB），疑似压缩炸弹，已拒绝")
            if "word/document.xml" not in z.namelist():
                raise LoadError("不是有效的 docx 文件（缺少 word/document.xml）")
    except zipfile.BadZipFile:
        raise LoadError("不是有效的 docx 文件（无法作为 zip 打开）") from None

    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    d = docx.Document(str(path))
    parts: list[str] = []
    for block in d.element.body.iterchildren():
        tag = block.tag.rsplit("}", 1)[-1]
        if tag == "p":
            p = Paragraph(block, d)
            text = p.text.strip()
            if not text:
                continue
            level = _heading_level(p.style.name if p.style is not None else "")
            parts.append(("#" * level + " " + text) if level else text)
        elif tag == "tbl":
            rows = []
            for row in Table(block, d).rows:
                cells = []
                for c in row.cells:
                    t = c.text.strip().replace("\n", " ")
                    if not cells or cells[-1] != t:  # merged cells repeat their text
                        cells.append(t)
                if any(cells):
                    rows.append(" | ".join(cells))
            if rows:
                parts.append("\n".join(rows))
    return Document(source, [Page("\n\n".join(parts))])


def _heading_level(style: str) -> int:
    m = re.match(r"(?:Heading|标题)\s*(\d)", style or "")
    if m:
        return min(int(m.group(1)), 6)
    return 1 if style in ("Title", "标题") else 0
