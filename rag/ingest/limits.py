"""Resource limits on reading one file, checked while it is read (never after loading it whole).

An upload of a megabyte can describe gigabytes: a zip part that inflates 1000-fold, a sheet of 20
million cells, a slide of 1.5 million shapes, a PDF of 10,000 pages. Every limit here names itself in
the reason a refused file gets, in Chinese, and the file is reported as failed (or, for spreadsheet
cells, indexed up to the limit with a warning); the other files go on.

All the numbers live here. `rag/ingest/worker.py` adds a memory ceiling and a hard timeout around the
whole parse, in a child process (settings `isolate_parsing`, `parse_memory_mb`, `parse_seconds`).
"""

from __future__ import annotations

import time
import zipfile
import zlib
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

MB = 2**20

# -- zip containers (docx, xlsx / xlsm, pptx, FAQ xlsx, and what LibreOffice converts .doc/.et/.dps to) --
# Inflated sizes, declared and actual: the XML parts (what the parsers read, told by their content) and
# the other parts (images, video, embedded files: held as bytes, never parsed).
MAX_UNPACKED_BYTES = 64 * MB
MAX_MEDIA_BYTES = 256 * MB
MAX_ZIP_PARTS = 10_000  # parts in the archive (a real document has tens to a few hundred)
MAX_ZIP_RATIO = 200  # inflated / compressed, for a part over RATIO_MIN_BYTES (real XML: 5-30x)
RATIO_MIN_BYTES = 1 * MB
# XML elements (counted as tags while inflating) in the parts a library parses into a tree at once
# (all of a docx or pptx; a workbook's parts but its worksheets, which are streamed): lxml takes ~150
# bytes each.
MAX_XML_ELEMENTS = 4_000_000

# -- spreadsheets: beyond these a sheet is cut off where it got to, with a warning --------------------
MAX_ROWS = 20_000  # rows per sheet: a table that large is data, not a document
MAX_SHEET_CELLS = 200_000  # non-empty cells per sheet
MAX_BOOK_CELLS = 1_000_000  # non-empty cells per workbook, all sheets together
MAX_SHEET_SPAN = 2_000_000  # cells visited per sheet, empty ones included (rows padded to their last cell)
MAX_ROW_CELLS = 16_384  # cells in one row: Excel's column count; more is no spreadsheet (refused)
# XML elements of a sheet outside its cell data (column formats, merged ranges, conditional formats,
# validations...): the reader builds an object for each (refused beyond).
MAX_SHEET_EXTRAS = 100_000

# -- slides (refused beyond) ------------------------------------------------------------------------
MAX_SLIDES = 1_000  # slides per deck
MAX_SLIDE_SHAPES = 5_000  # shapes (and table cells) per slide

# -- PDF (refused beyond) ---------------------------------------------------------------------------
MAX_PDF_PAGES = 2_000

# -- any file (refused beyond) ----------------------------------------------------------------------
MAX_TEXT_CHARS = 10_000_000  # characters of text extracted from one file ("1000 万字")
MAX_CHUNKS = 20_000  # chunks made of one file
MAX_CHUNK_CHARS = 30_000_000  # characters of all its chunks (table chunks repeat their header row)
MAX_PARA_CHARS = 10_000  # lines rejoined into one paragraph at most (longer: a new paragraph starts)
DEFAULT_SECONDS = 300  # wall-clock budget per file when settings give none (`parse_seconds`)
TICK_EVERY = 256  # loops over rows / paragraphs check the clock this often


class LoadError(Exception):
    """A file that cannot be indexed; str() is the reason shown to users."""


class LimitExceeded(LoadError):
    """A file past one of the limits above; str() names the limit."""


def snapshot() -> dict[str, int]:
    """The limits as they are now (a test may lower them): the worker process applies the same."""
    return {k: v for k, v in globals().items() if k.isupper() and isinstance(v, int) and not isinstance(v, bool)}


def apply(values: dict[str, int]) -> None:
    g = globals()
    for k, v in values.items():
        if k.isupper() and k in g:
            g[k] = v


# -- the per-file budget: wall clock, extracted text, chunks -----------------------------------------
class Budget:
    def __init__(self, seconds: float):
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.chars = 0
        self.chunks = 0
        self.chunk_chars = 0
        self._n = 0

    def check_time(self, where: str = "") -> None:
        if time.monotonic() > self.deadline:
            at = f"（停在{where}）" if where else ""
            raise LimitExceeded(f"解析超时：超过每个文件 {self.seconds:g} 秒的上限{at}，已停止，未索引")

    def tick(self, where: str = "") -> None:
        self._n += 1
        if self._n % TICK_EVERY == 0:
            self.check_time(where)


_current: ContextVar[Budget | None] = ContextVar("kexie_parse_budget", default=None)


@contextmanager
def budget(seconds: float | None = None):
    """The budget of the file being read; nested calls (load inside chunk_file) share the outer one."""
    b = _current.get()
    if b is not None:
        yield b
        return
    token = _current.set(Budget(seconds or DEFAULT_SECONDS))
    try:
        yield _current.get()
    finally:
        _current.reset(token)


def check_time(where: str = "") -> None:
    """Raise past the file's wall-clock budget (call between pages, sheets, slides)."""
    b = _current.get()
    if b is not None:
        b.check_time(where)


def tick(where: str = "") -> None:
    """`check_time` every TICK_EVERY calls: cheap enough for a loop over rows or paragraphs."""
    b = _current.get()
    if b is not None:
        b.tick(where)


def add_text(n: int, where: str = "") -> None:
    """Count `n` characters extracted; raise past MAX_TEXT_CHARS."""
    b = _current.get()
    if b is None:
        if n > MAX_TEXT_CHARS:
            raise LimitExceeded(_text_reason(n, where))
        return
    b.chars += n
    if b.chars > MAX_TEXT_CHARS:
        raise LimitExceeded(_text_reason(b.chars, where))


def _text_reason(n: int, where: str) -> str:
    at = f"（读到{where}）" if where else ""
    return f"文字过多：提取出的文字超过每个文件 {MAX_TEXT_CHARS} 字的上限{at}，已拒绝；请拆分成几个文件后上传"


def add_chunk(chars: int) -> None:
    """Count one chunk made; raise past MAX_CHUNKS chunks or MAX_CHUNK_CHARS characters."""
    b = _current.get()
    if b is None:
        return
    b.chunks += 1
    b.chunk_chars += chars
    if b.chunks > MAX_CHUNKS:
        raise LimitExceeded(f"段落过多：分块超过每个文件 {MAX_CHUNKS} 段的上限，已拒绝；请拆分成几个文件后上传")
    if b.chunk_chars > MAX_CHUNK_CHARS:
        raise LimitExceeded(f"段落文字过多：分块后的文字超过每个文件 {MAX_CHUNK_CHARS} 字的上限"
                            "（表格的每一段都重复表头，表头过长时会如此），已拒绝")
    if b.chunks % TICK_EVERY == 0:
        b.check_time(f"第 {b.chunks} 段")


# -- zip containers ---------------------------------------------------------------------------------
def check_zip(path: Path, label: str, streamed: frozenset[str] = frozenset()) -> None:
    """Refuse a zip-based file (docx, xlsx, pptx...) that would expand past the limits: part count, the
    sizes it declares, compression ratio, then what each part actually inflates to and its XML elements,
    counted while inflating, before any parser starts. Python's zipfile never returns more than a part
    declares (it stops there and fails the CRC), so this pass bounds what the parsers will read. A part
    is XML by its content (what a parser would accept), not its name: a library picks parts by their
    declared content type. The parts named in `streamed` are read as a stream by their parser (a
    workbook's worksheets): their bytes count, their elements do not."""
    try:
        z = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise LoadError(f"不是有效的 {label} 文件（无法作为 zip 打开），可能已损坏或是其他格式改了扩展名") from None
    with z:
        infos = z.infolist()
        if len(infos) > MAX_ZIP_PARTS:
            raise LimitExceeded(f"{label} 文件内含 {len(infos)} 个部件，超过上限 {MAX_ZIP_PARTS} 个，{_BOMB}")
        xml_named = sum(i.file_size for i in infos if _xml_name(i.filename))
        if xml_named > MAX_UNPACKED_BYTES:
            raise LimitExceeded(_too_big(label, f"声明 {xml_named / MB:.0f} MB"))
        declared = sum(i.file_size for i in infos)
        if declared > MAX_UNPACKED_BYTES + MAX_MEDIA_BYTES:
            raise LimitExceeded(f"{label} 解压后过大（声明 {declared / MB:.0f} MB，超过解压后 "
                                f"{(MAX_UNPACKED_BYTES + MAX_MEDIA_BYTES) // MB} MB 的上限），{_BOMB}")
        for i in infos:
            if i.file_size > RATIO_MIN_BYTES and i.file_size > MAX_ZIP_RATIO * max(i.compress_size, 1):
                raise LimitExceeded(f"{label} 中的 {i.filename[:80]} 压缩比异常（{i.file_size // max(i.compress_size, 1)} 倍，"
                                    f"超过 {MAX_ZIP_RATIO} 倍的上限），{_BOMB}")
        try:
            _inflate(z, infos, label, streamed)
        except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError) as e:  # bad CRC, encrypted...
            raise LoadError(f"{label} 文件已损坏，无法解压（{type(e).__name__}: {str(e)[:200]}）") from None


_BOMB = "疑似压缩炸弹，已拒绝"


def _too_big(label: str, what: str) -> str:
    return f"{label} 解压后过大（文字与结构部分{what}，超过解压后 {MAX_UNPACKED_BYTES // MB} MB 的上限），{_BOMB}"


def _xml_name(name: str) -> bool:
    return name.lower().endswith((".xml", ".rels", ".vml"))


def _looks_like_xml(head: bytes) -> bool:
    """Whether a part's first bytes could start an XML document (a parser accepts nothing else)."""
    for bom in (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"):
        if head.startswith(bom):
            head = head[len(bom):]
            break
    head = head[:4096].lstrip(b" \t\r\n\x00")
    return not head or head.startswith(b"<")


def _inflate(z: zipfile.ZipFile, infos: list[zipfile.ZipInfo], label: str, streamed: frozenset[str]) -> None:
    xml = media = elements = 0
    for i in infos:
        if i.is_dir():
            continue
        with z.open(i) as f:
            is_xml = None
            while block := f.read(1 * MB):
                if is_xml is None:
                    is_xml = _looks_like_xml(block)
                if not is_xml:
                    media += len(block)
                    if media > MAX_MEDIA_BYTES:
                        raise LimitExceeded(f"{label} 解压后过大（图片等其他部分超过解压后 {MAX_MEDIA_BYTES // MB} MB 的上限），已拒绝")
                    continue
                xml += len(block)
                if xml > MAX_UNPACKED_BYTES:
                    raise LimitExceeded(_too_big(label, f"在 {i.filename[:80]} 处"))
                if i.filename not in streamed:
                    elements += block.count(b"<") - block.count(b"</") - block.count(b"<?") - block.count(b"<!")
                    if elements > MAX_XML_ELEMENTS:
                        raise LimitExceeded(f"{label} 内容结构过于庞大（XML 元素超过 {MAX_XML_ELEMENTS} 个的上限，"
                                            f"在 {i.filename[:80]} 中），{_BOMB}")
                check_time(i.filename[:80])


def too_big(size: int, max_file_mb: int) -> str:
    """Why a file of `size` bytes is refused (the one size cap: uploads and indexing), or ""."""
    return f"文件过大（{round(size / MB, 1):g} MB，上限 {max_file_mb} MB）" if size > max_file_mb * MB else ""
