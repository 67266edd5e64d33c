"""Read txt/md/pdf/docx files into Documents; raise LoadError with a user-facing reason."""

from __future__ import annotations

import codecs
import os
import re
import zipfile
from pathlib import Path

from rag.models import Document, Page
from rag.text import HAN, HAN_CHAR

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
            data = path.read_bytes()
            if not data:
                raise Skipped("文件为空（0 字节）")
            doc = Document(source, [Page(decode_text(data))])
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
        raise Skipped("文件中没有可提取的文字")
    _check_line_lengths(doc)
    return doc


def decode_text(data: bytes) -> str:
    """Decode text bytes: BOMs, UTF-16 without BOM, UTF-8, then line by line UTF-8 or GB18030 (superset
    of GBK), so that a file glued together from differently encoded parts keeps every part readable."""
    for bom, enc in (
        (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16 LE: FF FE 00 00 starts with FF FE
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            return _check_text(data.decode(enc, errors="replace"))
    if b"\x00" in data[:4096]:
        enc = _utf16_without_bom(data, min_share=0.0 if _looks_utf16(data) else 0.9)
        if enc:
            return _check_text(data.decode(enc, errors="replace"))
        raise LoadError("不是文本文件（含二进制数据）")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        text = None
        # A UTF-8 file cut in the middle of its last character (a truncated copy or download).
        if e.reason == "unexpected end of data" and len(data) - e.start < 4 and not _utf16_without_bom(data):
            text = data[: e.start].decode("utf-8")
    if text is not None:
        try:
            return _check_text(_prefer_gbk_if_plausible(data, text))
        except LoadError:
            # UTF-16 Chinese can be all bytes < 0x80 (专协 = 13 4E 4F 53): "valid" ASCII full of control codes.
            enc = _utf16_without_bom(data)
            if not enc:
                raise
            return _check_text(data.decode(enc, errors="replace"))
    enc = _utf16_without_bom(data)
    if enc:
        return _check_text(data.decode(enc, errors="replace"))
    return _check_text("\n".join(_decode_line(line) for line in data.split(b"\n")))


def _prefer_gbk_if_plausible(data: bytes, text: str) -> str:
    """Short GBK text can also be valid UTF-8 (专专专士 is D7A8 D7A8 D7A8 CABF, Hebrew רררʿ in UTF-8):
    when the UTF-8 reading is mostly unusual characters and the GB18030 reading is ordinary Chinese,
    take the latter."""
    if text.isascii() or HAN_CHAR.search(text[:20000]) or _common_share(text[:20000]) >= 0.9:
        return text  # plausible as it is, or real UTF-8 Chinese (even if rare characters)
    try:
        gb = data.decode("gb18030")
    except UnicodeDecodeError:
        return text
    return gb if _common_share(gb[:20000]) >= 0.9 else text


def _common_share(text: str) -> float:
    common = _common_chars()
    return sum(1 for ch in text if ch in common) / max(1, len(text))


def _decode_line(line: bytes) -> str:
    """One line of a file that is not valid UTF-8 as a whole: GBK/GB18030, UTF-8, or UTF-8 cut mid-character.

    GB18030 accepts almost any byte sequence, so a UTF-8 line "decodes" to mojibake (涓枃) without an
    error; the two readings are compared by how much of them is replacement characters and rare glyphs."""
    if line.isascii():
        return line.decode("ascii")
    try:
        u8, strict = line.decode("utf-8"), True
        if HAN_CHAR.search(u8) and _common_share(u8[:4000]) >= 0.9:
            return u8
    except UnicodeDecodeError:
        try:
            gb = line.decode("gb18030")
            if _common_share(gb[:4000]) >= 0.9:
                return gb  # the usual GBK line
        except UnicodeDecodeError:
            pass
        u8, strict = line.decode("utf-8", errors="replace"), False
    gb = line.decode("gb18030", errors="replace")
    return min((u8, gb) if strict else (gb, u8), key=_implausibility)  # ties: the strict reading


def _implausibility(text: str) -> int:
    sample = text[:4000]
    common = _common_chars()
    cost = 4 * sample.count("\ufffd") + sum(1 for ch in sample if ch not in common)
    if not HAN_CHAR.search(sample):
        # In a file that is not UTF-8 as a whole, non-ASCII without a single hanzi is suspect:
        # GBK 协 (D0 AD) is also valid UTF-8 (Cyrillic Э).
        cost += 2 * sum(1 for ch in sample if not ch.isascii())
    return cost


_COMMON: frozenset[str] | None = None


def _common_chars() -> frozenset[str]:
    """Characters ordinary Chinese text is made of: GB2312 (6763 hanzi; symbols, Greek, Cyrillic, kana),
    CJK and full-width punctuation, printable ASCII, Latin-1 and whitespace. Mis-decoded bytes land
    mostly outside this set."""
    global _COMMON
    if _COMMON is None:
        chars = set(bytes(range(0x20, 0x7F)).decode("ascii")) | set("\n\r\t\f\u3000")
        chars |= {chr(c) for c in range(0xA0, 0x100)}  # Latin-1 symbols and letters: ² ° × é
        for hi in list(range(0xA1, 0xAA)) + list(range(0xB0, 0xF8)):  # GB2312 symbol rows and hanzi
            for lo in range(0xA1, 0xFF):
                try:
                    chars.add(bytes((hi, lo)).decode("gb2312"))
                except UnicodeDecodeError:
                    pass
        chars |= {chr(c) for c in range(0x3000, 0x3040)} | {chr(c) for c in range(0xFF01, 0xFF5F)}
        chars |= set("·—–‘’“”…、《》【】〔〕×÷°±≤≥％№")
        chars.discard("\ufffd")
        _COMMON = frozenset(chars)
    return _COMMON


def _looks_utf16(data: bytes) -> bool:
    """ASCII-heavy UTF-16 without BOM: NUL bytes on one side only."""
    sample = data[:4000]
    if len(sample) < 4:
        return False
    even_nul = sample[0::2].count(0) / max(1, len(sample[0::2]))
    odd_nul = sample[1::2].count(0) / max(1, len(sample[1::2]))
    return max(even_nul, odd_nul) > 0.3 and min(even_nul, odd_nul) < 0.05


def _utf16_without_bom(data: bytes, min_share: float = 0.9) -> str | None:
    """UTF-16 without BOM: read in the right byte order it is almost all common characters, in the
    wrong order (or as GBK/UTF-8 bytes) it is not. NUL bytes alone cannot tell: Chinese text has few,
    and 一 (U+4E00) is 00 4E, which looks like ASCII "N" in the other byte order."""
    if len(data) < 4:
        return None
    sample = data[:20000]
    sample = sample[: len(sample) // 2 * 2]
    best, best_share = None, 0.0
    for enc in ("utf-16-le", "utf-16-be"):
        share = _common_share(sample.decode(enc, errors="replace"))
        if share > best_share:
            best, best_share = enc, share
    return best if best_share >= min_share and best_share > 0 else None


def _check_text(text: str) -> str:
    if not text:
        return text
    sample = text[:20000]
    bad = sum(1 for ch in sample if ch == "\ufffd" or (ord(ch) < 32 and ch not in "\n\r\t\f"))
    if bad / len(sample) > 0.05:
        raise LoadError("不是文本文件或编码无法识别（含大量乱码/控制字符）")
    return text.replace("\r\n", "\n").replace("\r", "\n")


# A line longer than this must look like prose (sentence ends or spaces at least every
# _MAX_RUN characters on average) or the file is skipped as data (base64, dumps, minified content).
MAX_LINE_CHARS = 100_000
_MAX_RUN = 300
_BREAKS = "。！？；!?;. \t\u3000"


def _check_line_lengths(doc: Document) -> None:
    for page in doc.pages:
        text = page.text
        if len(text) <= MAX_LINE_CHARS:
            continue
        start = 0
        while start < len(text):
            end = text.find("\n", start)
            end = len(text) if end < 0 else end
            n = end - start
            if n > MAX_LINE_CHARS:
                line = text[start:end]
                breaks = sum(line.count(ch) for ch in _BREAKS)
                if breaks * _MAX_RUN < n:
                    raise Skipped(
                        f"单行过长（一行约 {n / 10000:.0f} 万字符，没有换行，也几乎没有句号或空格），"
                        "不像正文，可能是数据导出或编码内容，已跳过"
                    )
            start = end + 1


_NEEDS_AES = "PDF 使用 AES 加密，读取需要安装 cryptography 组件（pip install cryptography）"


def _load_pdf(path: Path, source: str, ocr: bool) -> Document:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, PdfReadError

    with open(path, "rb") as fh:
        head = fh.read(1024)
    if b"%PDF-" not in head:
        raise LoadError("不是有效的 PDF 文件（缺少 %PDF 文件头），可能已损坏或是其他格式改了扩展名")
    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted:
            # Many PDFs are "encrypted" with an empty user password (print/copy restrictions only).
            try:
                ok = reader.decrypt("")
            except DependencyError:
                raise LoadError(_NEEDS_AES) from None
            except Exception:
                ok = 0
            if not ok:
                raise LoadError("PDF 已加密，需要密码才能打开；请先去除密码（另存为无密码的 PDF）后再上传")
        n_pages = len(reader.pages)
    except LoadError:
        raise
    except DependencyError:
        raise LoadError(_NEEDS_AES) from None
    except PdfReadError as e:
        raise LoadError(f"PDF 文件损坏或不完整（{e}）") from None
    except Exception as e:  # pypdf raises many types on damaged files
        raise LoadError(f"PDF 无法解析（{type(e).__name__}: {e}）") from None
    if n_pages == 0:
        raise Skipped("PDF 中没有任何页面")

    pages: list[Page] = []
    warnings: list[str] = []
    broken: list[int] = []  # pages whose text could not be extracted
    scanned: list[int] = []  # pages without a text layer but with images (scans) or drawings
    for i in range(1, n_pages + 1):
        try:
            page = reader.pages[i - 1]
            if _drop_invisible_text(page):
                warnings.append(f"第 {i} 页含白色占位字（提取时会变成重影字，如“监制制”），已忽略")
            text = page.extract_text() or ""
        except DependencyError:  # AES-128 streams: the key check passed without cryptography, reading did not
            raise LoadError(_NEEDS_AES) from None
        except Exception as e:  # one damaged page must not lose the others
            broken.append(i)
            warnings.append(f"第 {i} 页无法提取文字（{type(e).__name__}），已跳过")
            continue
        text, fixed = undouble_glyphs(text)
        if fixed:
            warnings.append(f"第 {i} 页提取出重影字（如“监制制”），已合并")
        if text.strip():
            pages.append(Page(text, i))
            continue
        if not _has_ink(page):
            continue  # a blank page
        if not ocr:
            scanned.append(i)
            continue
        from rag.ingest.ocr import OcrUnavailable, ocr_pdf_page

        try:
            text = ocr_pdf_page(path, i)
        except OcrUnavailable as e:
            raise LoadError(f"PDF 第 {i} 页没有文字层，需要 OCR，但{e}") from None
        except Exception as e:
            warnings.append(f"第 {i} 页 OCR 失败（{type(e).__name__}: {e}），已跳过")
            continue
        if text.strip():
            pages.append(Page(text, i, ocr=True))
            warnings.append(f"第 {i} 页没有文字层，已用 OCR 识别（可能有识别错误）")
        else:
            warnings.append(f"第 {i} 页没有文字层，OCR 也未识别出文字")
    if scanned:
        if not pages:
            raise Skipped("PDF 没有文字层（可能是扫描件或图片），可在设置中开启 OCR（ocr = true）后重新索引（kexie index）")
        warnings.append(f"第 {_page_list(scanned)} 页没有文字层（可能是扫描图片），未开启 OCR，这些页未索引")
    if not pages:
        if broken:
            raise LoadError(f"PDF 内容损坏，所有页面都无法提取文字（第 {_page_list(broken)} 页）")
        if not ocr:
            raise Skipped("PDF 中没有文字（页面为空白）")
    return Document(source, pages, warnings, scanned_pages=scanned)


def _page_list(numbers: list[int]) -> str:
    return "、".join(map(str, numbers[:10])) + ("等" if len(numbers) > 10 else "")


def _has_ink(page) -> bool:
    """Whether a page without extractable text shows anything: images (a scan) or drawn content."""
    try:
        if len(page.images) > 0:
            return True
    except Exception:
        return True  # unreadable image resources: assume a scan
    try:
        raw = page.get_contents()
        return raw is not None and len(raw.get_data().strip()) > 20
    except Exception:
        return True


_WHITE = {"rg": [1, 1, 1], "g": [1], "k": [0, 0, 0, 0]}
_SHOW = (b"Tj", b"TJ", b"'", b'"')


def _drop_invisible_text(page) -> bool:
    """Blank out single glyphs painted in white: typesetters pad labels ("监　制") with white glyphs,
    which text extraction would otherwise return as doubled characters ("监制制")."""
    from pypdf.generic import (
        ArrayObject,
        ByteStringObject,
        ContentStream,
        DecodedStreamObject,
        NameObject,
    )

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


_DOUBLED = re.compile(f"([{HAN}])\\1")


def undouble_glyphs(text: str) -> tuple[str, bool]:
    """Collapse glyphs doubled by fake-bold PDFs ("监监制制"), only where doubling dominates a line."""
    out, fixed = [], False
    for line in text.split("\n"):
        cjk = len(HAN_CHAR.findall(line))
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

    try:
        return Document(source, [Page(_docx_text(path))])
    except (LoadError, MemoryError):
        raise
    except Exception as e:  # broken XML, missing parts, bad CRC...: python-docx/lxml raise many types
        raise LoadError(f"docx 文件内容损坏，无法解析（{type(e).__name__}: {str(e)[:200]}）") from None


def _docx_text(path: Path) -> str:
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
    return "\n\n".join(parts)


def _heading_level(style: str) -> int:
    m = re.match(r"(?:Heading|标题)\s*(\d)", style or "")
    if m:
        return min(int(m.group(1)), 6)
    return 1 if style in ("Title", "标题") else 0


def walk_corpus(corpus_dir: Path):
    """(source, path) of every candidate file under the corpus, sorted: the one walk the indexer and the
    knowledge-base list share. Hidden files and folders (.versions/, .git/) and editor backups (~) are
    not documents; symlinks are returned as they are (the caller decides about their targets)."""
    for dirpath, dirnames, filenames in os.walk(corpus_dir, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or name.endswith("~"):
                continue
            p = Path(dirpath) / name
            yield p.relative_to(corpus_dir).as_posix(), p

