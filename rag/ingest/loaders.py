"""Read txt/md/pdf/docx files into Documents; raise LoadError with a user-facing reason."""

from __future__ import annotations

import codecs
import os
import re
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from rag.ingest import furniture, limits, ofd, office
from rag.ingest.limits import LimitExceeded, LoadError
from rag.lang.sentences import TERMINAL
from rag.lang.tables import fill, markdown, plausible
from rag.lang.text import HAN, HAN_CHAR
from rag.models import Document, Page

__all__ = ["LimitExceeded", "LoadError", "SUPPORTED", "Skipped", "decode_text", "load", "walk_corpus"]


class Skipped(LoadError):
    """A file deliberately not indexed (unsupported type, empty...)."""


def load(path: Path, source: str | None = None, ocr: bool = False) -> Document:
    """Load one file. `source` is the name shown in citations (default: the file name).

    Within the limits of `rag.ingest.limits`, checked while reading: a file past one raises
    LimitExceeded, a LoadError naming the limit. The wall-clock budget is the caller's
    (`limits.budget`, as `chunk_file` sets it) or DEFAULT_SECONDS."""
    with limits.budget():
        return _load(path, source or path.name, ocr)


def _load(path: Path, source: str, ocr: bool) -> Document:
    ext = path.suffix.lower()
    if ext not in SUPPORTED:
        raise Skipped(f"不支持的文件类型：{ext or '无扩展名'}")
    warnings: list[str] = []
    try:
        if path.stat().st_size == 0:
            raise Skipped("文件为空（0 字节）")
        doc = READERS[ext](path, source, ocr, warnings)
    except (LoadError, MemoryError):  # a MemoryError is the worker's to report (rag/ingest/worker.py)
        raise
    except office.ConversionUnavailable as e:
        raise Skipped(str(e)) from None
    except PermissionError:
        raise LoadError("没有读取权限") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise LoadError(f"文件无法读取（{type(e).__name__}: {e}）") from None
    except Exception as e:  # openpyxl, xlrd, python-pptx and lxml raise their own types on broken files
        raise LoadError(f"文件内容损坏，无法解析（{type(e).__name__}: {str(e)[:200]}）") from None
    doc.warnings = warnings + doc.warnings
    if not any(p.text.strip() for p in doc.pages):
        raise Skipped("文件中没有可提取的文字")
    _check_line_lengths(doc)
    return doc


def decode_text(data: bytes, warnings: list[str] | None = None) -> str:
    """Decode text bytes: BOMs, UTF-16 without BOM, UTF-8, Big5, then line by line UTF-8 or GB18030
    (superset of GBK), so that a file glued together from differently encoded parts keeps every part
    readable. A few NUL or undecodable bytes in a text are replaced, and said so in `warnings`; a text
    that still reads as mojibake is refused, never indexed."""
    warnings = [] if warnings is None else warnings
    for bom, enc in (
        (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16 LE: FF FE 00 00 starts with FF FE
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            return _check_text(data.decode(enc, errors="replace"))
    if b"\x00" in data:
        enc = _utf16_without_bom(data, min_share=0.0 if _looks_utf16(data) else 0.9)
        if enc:
            return _check_text(data.decode(enc, errors="replace"))
        nuls = data.count(0)
        if nuls > max(8, len(data) // 100):
            raise LoadError("不是文本文件（含二进制数据）")
        data = data.replace(b"\x00", b"")  # stray NULs (a bad export): the text around them is good
        warnings.append(f"含 {nuls} 个 NUL 空字节，已删除")
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
    loose = data.decode("utf-8", errors="replace")
    bad = loose.count("\ufffd")
    han = len(HAN_CHAR.findall(loose[:20000]))
    lines = "\n".join(_decode_line(line) for line in data.split(b"\n"))
    # Other encodings read as UTF-8 come out nearly all �; a short notice with a few stray bytes does not,
    # and its stray bytes read as nothing in GB18030 either (a GBK line among UTF-8 ones is no damage).
    short = han >= 3 * bad and "\ufffd" in lines
    if (han >= 40 or short) and bad <= max(8, len(loose) // 200) and plausibility(loose) >= PLAUSIBLE:
        # A UTF-8 file with a few broken bytes: keep its text, say where it is damaged.
        _check_text(loose.replace("\ufffd", ""))  # the rest must read as text; the � mark where it is damaged
        warnings.append(f"含 {bad} 处无法按 UTF-8 解码的字节，已替换为 �")
        return _unix_lines(loose)
    big5 = _big5(data)
    if big5 is not None and plausibility(big5) > plausibility(lines):
        return _check_text(big5)
    return _check_text(lines)


def _big5(data: bytes) -> str | None:
    for enc in ("big5", "big5hkscs"):  # HKSCS adds Hong Kong characters to Big5
        try:
            return data.decode(enc)
        except UnicodeDecodeError:
            continue
    return None


# The most frequent characters of Chinese text, simplified and traditional: about a third of any real
# Chinese text is made of them, and almost none of a mis-decoded one (Big5 read as GBK: い地チ㎝瓣厩м砃).
_FREQUENT = frozenset(
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行"
    "学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外"
    "天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情"
    "者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角"
    "期根论运农指几九区强放决西被干做必战先回则任取据处队南给色光门即保治北造百规热领七海口东导器压志世金增争济阶油思术极交"
    "受联什认六共权收证改清己美再采转更单风切打白教速花带安场身车例真务具万每目至达走积示议声报斗完类八离华名确才科张信马节"
    "這個們為國來會學發與於對說時過還當從點經開關區見長門問題實現進動產種應氣將業後東無體讓機華書車馬語義習歷傳際專強導團農"
    "織華統務記設資證認議質麼麗廣據價區術環邊幾級條號術協縣鄉級組總辦規劃計費參與舉領導")
PLAUSIBLE = 0.12


def plausibility(text: str) -> float:
    """Share of the Han characters that are frequent ones: 0.3–0.5 for real text, under 0.1 for mojibake.
    1.0 for text with too few Han characters to judge."""
    han = HAN_CHAR.findall(text[:20000])
    if len(han) < 40:
        return 1.0
    return sum(1 for ch in han if ch in _FREQUENT) / len(han)


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
    if plausibility(sample) < PLAUSIBLE:
        raise LoadError("文字读出来是乱码（编码无法识别：不像正常的简体或繁体中文），未索引；请另存为 UTF-8 后重新上传")
    return _unix_lines(text)


def _unix_lines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


# A line longer than this must look like prose (sentence ends or spaces at least every
# _MAX_RUN characters on average) or the file is skipped as data (base64, dumps, minified content).
MAX_LINE_CHARS = 100_000
_MAX_RUN = 300
_BREAKS = TERMINAL.replace("…", "") + ". \t\u3000"  # sentence ends or spaces


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
        # The declared count first (a number), then the page tree itself (pypdf bounds its walk).
        declared = _declared_pages(reader)
        if declared > limits.MAX_PDF_PAGES:
            raise LimitExceeded(_too_many_pages(declared))
        n_pages = len(reader.pages)
        if n_pages > limits.MAX_PDF_PAGES:
            raise LimitExceeded(_too_many_pages(n_pages))
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
    tables = _pdf_tables(path, warnings)
    broken: list[int] = []  # pages whose text could not be extracted
    scanned: list[int] = []  # pages without a text layer but with images (scans) or drawings
    for i in range(1, n_pages + 1):
        limits.check_time(f"PDF 第 {i} 页")
        try:
            page = reader.pages[i - 1]
            if _drop_invisible_text(page):
                warnings.append(f"第 {i} 页含白色占位字（提取时会变成重影字，如“监制制”），已忽略")
            text = tables[i] if i in tables else (page.extract_text() or "")
        except DependencyError:  # AES-128 streams: the key check passed without cryptography, reading did not
            raise LoadError(_NEEDS_AES) from None
        except Exception as e:  # one damaged page must not lose the others
            broken.append(i)
            warnings.append(f"第 {i} 页无法提取文字（{type(e).__name__}），已跳过")
            continue
        limits.add_text(len(text), f"PDF 第 {i} 页")
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
        limits.add_text(len(text), f"PDF 第 {i} 页")
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
    return Document(source, furniture.strip(pages), warnings, scanned_pages=scanned)


def _declared_pages(reader) -> int:
    try:
        return int(reader.trailer["/Root"]["/Pages"].get("/Count", 0))
    except Exception:  # a broken catalogue: the page tree walk decides
        return 0


def _too_many_pages(n: int) -> str:
    return f"PDF 页数过多：共 {n} 页，超过每个文件 {limits.MAX_PDF_PAGES} 页的上限，已拒绝；请拆分成几个文件后上传"


def _pdf_tables(path: Path, warnings: list[str]) -> dict[int, str]:
    """Pages holding tables, as text with each table in markdown at its place (pdfplumber: ruled tables,
    measured on the PDF fixtures; see README). Other pages keep pypdf's text."""
    try:
        import pdfplumber
    except ImportError:
        return {}
    out: dict[int, str] = {}
    try:
        with pdfplumber.open(str(path)) as pdf:
            for n, page in enumerate(pdf.pages, 1):
                limits.check_time(f"PDF 第 {n} 页（表格识别）")
                found = [t for t in page.find_tables() if plausible(t.extract())]
                if not found:
                    page.close()  # pdfplumber keeps each page's layout objects until closed
                    continue
                found.sort(key=lambda t: t.bbox[1])
                parts, top = [], 0.0
                for t in found:
                    x0, y0, x1, y1 = t.bbox
                    if y0 > top:  # the text above this table (and beside it, on the same lines)
                        parts.append(page.crop((0, top, page.width, y0)).extract_text() or "")
                    parts.append(markdown(fill(t.extract())))
                    top = max(top, y1)
                if top < page.height:
                    parts.append(page.crop((0, top, page.width, page.height)).extract_text() or "")
                out[n] = "\n".join(p for p in parts if p.strip())
                page.close()
    except (LoadError, MemoryError):
        raise
    except Exception as e:  # pypdf reads the text anyway: a table pass that fails costs only the tables
        warnings.append(f"表格识别失败（{type(e).__name__}），表格按普通文字索引")
        return {}
    return out


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


def _load_legacy(path: Path, source: str) -> Document:
    """.doc / .wps / .et / .dps converted by LibreOffice (then read as docx / xlsx / pptx) or antiword."""
    with tempfile.TemporaryDirectory(prefix="kexie-convert-") as tmp:
        out = office.convert_legacy(path, Path(tmp))
        if isinstance(out, str):
            limits.add_text(len(out))
            return Document(source, [Page(office.antiword_tables(out))])
        if out.suffix == ".docx":
            return _load_docx(out, source)
        if out.suffix == ".xlsx":
            return office.load_spreadsheet(out, source)
        return office.load_pptx(out, source)


def _load_docx(path: Path, source: str) -> Document:
    limits.check_zip(path, "docx")  # zip bombs: inflated size, ratio, XML elements
    try:
        with zipfile.ZipFile(path) as z:
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
    # Style name per style id: python-docx resolves a paragraph's style by scanning all styles (~2 ms, most
    # of the time a long document took), and a style id always resolves to the same style.
    style_names: dict[str | None, str] = {}
    for n, block in enumerate(d.element.body.iterchildren(), 1):
        limits.tick(f"docx 第 {n} 段")
        tag = block.tag.rsplit("}", 1)[-1] if isinstance(block.tag, str) else ""
        if tag == "p":
            p = Paragraph(block, d)
            text = p.text.strip()
            if not text:
                continue
            sid = block.style  # the paragraph's pStyle id, None for the default style
            if sid not in style_names:
                style = p.style
                style_names[sid] = style.name if style is not None else ""
            level = _heading_level(style_names[sid])
            parts.append(("#" * level + " " + text) if level else text)
            limits.add_text(len(text), f"docx 第 {n} 段")
        elif tag == "tbl":
            # Merged cells come back as repeats of their text: that is the filling a row needs to be read alone.
            grid = []
            for r, row in enumerate(Table(block, d).rows, 1):
                limits.tick(f"docx 第 {n} 段的表格第 {r} 行")
                # A cell spanning columns repeats once per column: check the spans before building the row.
                width = sum(tc.grid_span for tc in row._tr.tc_lst)
                if width > limits.MAX_ROW_CELLS:
                    raise LimitExceeded(f"docx 表格的一行有 {width} 列，超过每行 {limits.MAX_ROW_CELLS} 列的上限，"
                                        "不像正常的表格，已拒绝")
                grid.append([c.text for c in row.cells])
                limits.add_text(sum(map(len, grid[-1])), f"docx 第 {n} 段的表格")
            table = markdown(fill(grid))
            if table:
                parts.append(table)
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
            if name.startswith(".") or name.endswith(("~", ".meta.toml")):  # a sidecar belongs to its document
                continue
            p = Path(dirpath) / name
            yield p.relative_to(corpus_dir).as_posix(), p


# -- the readers, by extension: the supported list, the upload filter and its label come from here --------
def _read_text(path: Path, source: str, ocr: bool, warnings: list[str]) -> Document:
    ext = path.suffix.lower()
    text = decode_text(path.read_bytes(), warnings)
    limits.add_text(len(text))
    if ext in office.WEB or office.looks_like_html(text):  # a web page, also one saved as .txt
        text = office.html_text(text)
    elif ext != ".txt":  # markdown comments (<!-- INFO END -->) are no text
        text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    return Document(source, [Page(text)])


READERS: dict[str, Callable[[Path, str, bool, list[str]], Document]] = {
    **dict.fromkeys((".txt", ".md", ".markdown", *office.WEB), _read_text),
    ".pdf": lambda path, source, ocr, warnings: _load_pdf(path, source, ocr),
    ".ofd": lambda path, source, ocr, warnings: ofd.load_ofd(path, source),
    ".docx": lambda path, source, ocr, warnings: _load_docx(path, source),
    **dict.fromkeys(office.SPREADSHEETS, lambda path, source, ocr, warnings: office.load_spreadsheet(
        path, source, decode=lambda b: decode_text(b, warnings))),
    **dict.fromkeys(office.SLIDES, lambda path, source, ocr, warnings: office.load_pptx(path, source)),
    # Last: .et and .dps are WPS binaries, converted first (a converter makes them xlsx / pptx).
    **dict.fromkeys(office.LEGACY, lambda path, source, ocr, warnings: _load_legacy(path, source)),
}
SUPPORTED = tuple(READERS)  # every type a file may have to be indexed, and (unless narrowed) uploaded
