"""Bad-input corpus: broken, odd and hostile files each get a clear per-file result, and never stop a run.

The corpus is generated here (nothing binary is checked in). One index run over all cases plus two good
files checks: the run finishes, the good files are searchable, every bad file is listed in
report.failed / report.skipped with a Chinese reason naming the cause, and the odd-but-fine files
(other encodings, odd names, owner-password PDFs, doubled glyphs) are indexed with the right text.
"""

from __future__ import annotations

import importlib.util
import os
import random
import re
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from conftest import PROJECT_ROOT, SHARED, make_pdf

from rag.ingest.loaders import LoadError, Skipped, decode_text, load
from rag.settings import load_settings

CJK_FONT = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
COLOPHON = SHARED / "fixtures" / "pdf" / "simplified_chinese_colophon.pdf"


def _permissions_enforced() -> bool:
    """False when running as root (or with CAP_DAC_OVERRIDE): chmod 000 does not stop reading."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        probe = Path(d) / "probe"
        probe.write_bytes(b"x")
        probe.chmod(0)
        try:
            probe.read_bytes()
        except PermissionError:
            return True
        finally:
            probe.chmod(0o600)
    return False


CAN_READ_ANYTHING = not _permissions_enforced()  # root in CI and dev containers

GOOD_A = "good_量子科普.txt"
GOOD_A_TEXT = "# 量子科普嘉年华\n\n市科协在科技馆举办量子科普嘉年华，吸引三千名青少年参加。活动设置了十二个互动展台。\n"
GOOD_B = "good_航模竞赛.docx"
GOOD_B_TEXT = "青少年航模竞赛在体育中心举行，共有四十六支代表队参赛。"
SENTENCE = "中国科协推动一流科技期刊建设，服务科技工作者一万人次。"  # contains 一 (U+4E00: a NUL byte in UTF-16)


# -- generators ---------------------------------------------------------------------------------------



def text_image(lines: list[str], width: int = 1240, font_px: int = 44):
    """A white page image with black Chinese text drawn by PIL (needs a CJK font for real glyphs)."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("L", (width, 120 + len(lines) * font_px * 2), 255)
    draw = ImageDraw.Draw(img)
    if CJK_FONT.exists():
        font = ImageFont.truetype(str(CJK_FONT), font_px, index=2)  # face 2: Noto Sans CJK SC
        for i, line in enumerate(lines):
            draw.text((80, 60 + i * font_px * 2), line, fill=0, font=font)
    else:  # no CJK font: still an image-only page, just without readable glyphs
        for i in range(len(lines)):
            draw.rectangle((80, 60 + i * font_px * 2, width - 80, 60 + i * font_px * 2 + font_px), fill=0)
    return img


def make_image_pdf(path: Path, lines: list[str]) -> None:
    """A PDF whose only page is a picture of text: no text layer (a scan)."""
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    img = text_image(lines)
    c = canvas.Canvas(str(path), pagesize=(595, 842))
    w = 595 - 60
    h = w * img.height / img.width
    c.drawImage(ImageReader(img), 30, 842 - 40 - h, w, h)
    c.showPage()
    c.save()


def encrypt_pdf(src: Path, dst: Path, user: str, owner: str, algorithm: str = "RC4-128") -> None:
    from pypdf import PdfReader, PdfWriter

    w = PdfWriter(clone_from=PdfReader(str(src)))
    w.encrypt(user_password=user, owner_password=owner, algorithm=algorithm)
    with open(dst, "wb") as f:
        w.write(f)


def make_docx(path: Path, paragraphs: list[str]) -> None:
    import docx

    d = docx.Document()
    for p in paragraphs:
        d.add_paragraph(p)
    d.save(str(path))


def noise(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


# -- the cases ----------------------------------------------------------------------------------------

@dataclass
class Case:
    name: str  # path relative to the corpus dir
    expect: str  # indexed | skipped | failed | ignored (not reported, never indexed)
    build: Callable[[Path, Path], None]  # (file path, scratch dir outside the corpus)
    reason: str = ""  # regex the reason must match (skipped / failed)
    phrase: str = ""  # text that must be found in the indexed chunks (indexed)
    note: str = ""


CASES: list[Case] = []


def case(name: str, expect: str, reason: str = "", phrase: str = "", note: str = ""):
    def deco(fn):
        CASES.append(Case(name, expect, fn, reason, phrase, note))
        return fn

    return deco


def _write(data: bytes):
    return lambda p, scratch: p.write_bytes(data)


def _add(name, expect, data: bytes, reason="", phrase="", note=""):
    CASES.append(Case(name, expect, _write(data), reason, phrase, note))


# Empty and whitespace.
_add("empty.txt", "skipped", b"", "文件为空")
# Two empty files have the same contents, yet each is empty, not a duplicate of the other.
_add("empty.docx", "skipped", b"", "文件为空")
_add("whitespace_only.txt", "skipped", " \n\t\n\u3000\u3000\r\n  ".encode("utf-8"), "没有可(提取|索引)的文字")
_add("whitespace_only_utf16.md", "skipped", "\ufeff  \n \t \n".encode("utf-16-le"), "没有可(提取|索引)的文字")

# Binary data under text/document names.
_add("binary.txt", "failed", noise(50_000, 1), "二进制|乱码")
_add("binary.pdf", "failed", noise(50_000, 2), "PDF.*(损坏|无法解析)")
_add("binary.docx", "failed", noise(50_000, 3), "docx")
_add("png_named.md", "failed", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + noise(20_000, 4), "二进制|乱码")
_add("nul_only.txt", "failed", b"\x00" * 8192, "二进制")
_add("control_chars.txt", "failed", ("正文\x01\x02\x03\x04\x05\x06\x07\x08" * 500).encode("utf-8"), "乱码|控制字符")


@case("truncated.pdf", "failed", "PDF.*(损坏|不完整)")
def _(p, scratch):
    make_pdf(scratch / "full.pdf", [["截断之前的内容。"] * 20] * 3)
    data = (scratch / "full.pdf").read_bytes()
    p.write_bytes(data[: len(data) // 3])


@case("encrypted_user_password.pdf", "failed", "已加密.*密码")
def _(p, scratch):
    make_pdf(scratch / "plain_u.pdf", [["这份文件设置了打开密码。"]])
    encrypt_pdf(scratch / "plain_u.pdf", p, user="secret", owner="owner-secret")


@case("encrypted_owner_only.pdf", "indexed", phrase="只限制打印和复制",
      note="empty user password + owner password: opens without a password")
def _(p, scratch):
    make_pdf(scratch / "plain_o.pdf", [["这份文件只限制打印和复制，打开不需要密码。"]])
    encrypt_pdf(scratch / "plain_o.pdf", p, user="", owner="owner-secret")


if importlib.util.find_spec("cryptography"):  # pypdf needs it for AES, to write and to read
    @case("encrypted_aes256_owner_only.pdf", "indexed", phrase="高级加密标准", note="AES-256, empty user password")
    def _(p, scratch):
        make_pdf(scratch / "plain_aes.pdf", [["这份文件用高级加密标准加密，打开不需要密码。"]])
        encrypt_pdf(scratch / "plain_aes.pdf", p, user="", owner="owner-secret", algorithm="AES-256")

    @case("encrypted_aes256_user_password.pdf", "failed", "已加密.*密码")
    def _(p, scratch):
        make_pdf(scratch / "plain_aes_u.pdf", [["这份文件需要打开密码。"]])
        encrypt_pdf(scratch / "plain_aes_u.pdf", p, user="secret", owner="owner-secret", algorithm="AES-256")


@case("scanned_no_text_layer.pdf", "skipped", "扫描件.*OCR|OCR.*扫描件")
def _(p, scratch):
    make_image_pdf(p, ["扫描件：科协年度工作报告", "本页只有图片，没有文字层。"])


@case("blank_page.pdf", "skipped", "没有(文字|可提取的文字)")
def _(p, scratch):
    from pypdf import PdfWriter

    w = PdfWriter()
    w.add_blank_page(595, 842)
    with open(p, "wb") as f:
        w.write(f)


@case("zero_pages.pdf", "skipped", "没有(任何)?页面|没有可提取的文字")
def _(p, scratch):
    from pypdf import PdfWriter

    with open(p, "wb") as f:
        PdfWriter().write(f)


if COLOPHON.exists():
    @case("colophon_doubled_glyphs.pdf", "indexed", phrase="中华人民共和国国务院侨务办公室",
          note="white spacer glyphs would extract as 监制制; fixed with a warning")
    def _(p, scratch):
        shutil.copy(COLOPHON, p)

# Chinese encodings.
_add("gbk.txt", "indexed", "科普大篷车进校园，覆盖全市一百二十所中小学。".encode("gbk"), phrase="科普大篷车进校园")
_add("gb18030_ext.txt", "indexed", "䶮字和𠮷字只在GB18030中有编码，学会年报照常收录。".encode("gb18030"),
     phrase="䶮字和𠮷字只在GB18030中有编码")
_add("utf16le_bom.txt", "indexed", b"\xff\xfe" + ("小端带BOM：" + SENTENCE).encode("utf-16-le"),
     phrase="小端带BOM")
_add("utf16be_bom.txt", "indexed", b"\xfe\xff" + ("大端带BOM：" + SENTENCE).encode("utf-16-be"), phrase="大端带BOM")
_add("utf16le_no_bom.txt", "indexed", ("小端无标记。" + SENTENCE * 3).encode("utf-16-le"), phrase="小端无标记")
_add("utf16be_no_bom.txt", "indexed", ("大端无标记。" + SENTENCE * 3).encode("utf-16-be"), phrase="大端无标记")
_add("utf16le_no_bom_ascii.txt", "indexed", "Annual report 2024: 科协 members 1200.\n".encode("utf-16-le") * 5,
     phrase="科协 members 1200")
_add("mixed_utf8_gbk.txt", "indexed",
     "第一部分用UTF-8编码：院士专家工作站建设。\n".encode("utf-8") + "第二部分用GBK编码：科技志愿服务队三百支。\n".encode("gbk"),
     phrase="院士专家工作站建设", note="two files concatenated: each line decoded on its own")
# GB18030 accepts these UTF-8 bytes without error (as 绉戝崗骞村害鎶ュ憡): the old whole-file fallback did that.
MIXED_GBK_FIRST = "第二部分用GBK编码：科技志愿服务队三百支。\n".encode("gbk") + "科协年度报告\n".encode("utf-8")
_add("mixed_gbk_then_utf8.txt", "indexed", MIXED_GBK_FIRST, phrase="科协年度报告")
_add("utf8_cut_mid_char.txt", "indexed", "截断的UTF-8文件：青少年科技创新大赛圆满结束".encode("utf-8")[:-1],
     phrase="青少年科技创新大赛圆满结", note="last character cut in half must not turn the file into GBK mojibake")


@case("huge_200mb.txt", "skipped", "文件过大")
def _(p, scratch):
    with open(p, "wb") as f:  # sparse: 200 MB on paper, a few bytes on disk
        f.write("超大文件。".encode("utf-8"))
        f.truncate(200 * 2**20)


@case("long_line_5mb.txt", "skipped", "单行过长")
def _(p, scratch):
    import base64

    p.write_bytes(base64.b64encode(noise(3_900_000, 5)))  # ~5.2 MB, one line, no punctuation


@case("zip_bomb.docx", "failed", "压缩炸弹")
def _(p, scratch):
    # word/document.xml expands to 310 MB; written in 1 MB blocks, the archive is ~300 KB.
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        with z.open("word/document.xml", "w", force_zip64=True) as f:
            f.write(b'<?xml version="1.0"?><w:document><w:body><w:p><w:r><w:t>')
            block = b" " * 2**20
            for _ in range(310):
                f.write(block)
            f.write(b"</w:t></w:r></w:p></w:body></w:document>")


@case("zip_not_docx.docx", "failed", "docx")
def _(p, scratch):
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("hello.txt", "不是 Word 文档")


@case("corrupt_xml.docx", "failed", "docx.*(损坏|无法解析)")
def _(p, scratch):
    make_docx(scratch / "ok.docx", ["正常段落。"])
    with zipfile.ZipFile(scratch / "ok.docx") as src, zipfile.ZipFile(p, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "word/document.xml":
                data = data[: len(data) // 2]  # cut in the middle of a tag
            dst.writestr(info, data)


@case("empty_body.docx", "skipped", "没有可(提取|索引)的文字")
def _(p, scratch):
    make_docx(p, [])


# A broken .doc: the converter refuses it, or (none installed) the Word 97 reader does.
_add("legacy.doc", "failed", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 4096, "无法读取|无法转换|不是有效的 Word")
_add("sheet.xlsx", "failed", b"PK\x03\x04" + noise(1000, 6), "无法读取|损坏")
_add("README", "skipped", "没有扩展名的说明文件。".encode("utf-8"), "不支持的文件类型.*无扩展名")

# Odd but valid names.
_add("name with  spaces.txt", "indexed", "文件名带空格：科技工作者之家建设。".encode("utf-8"), phrase="科技工作者之家建设")
_add("科协 年度报告（2024）.txt", "indexed", "中文文件名：学会服务站点一百个。".encode("utf-8"), phrase="学会服务站点一百个")
_add("🚀科普活动 📚.md", "indexed", "# 表情文件名\n\n全国科普日主场活动观众两万人。\n".encode("utf-8"), phrase="全国科普日主场活动")
_add("a..b.txt", "indexed", "文件名含两个点：海智计划引进项目八个。".encode("utf-8"), phrase="海智计划引进项目")
_add("UPPER.TXT", "indexed", "大写扩展名：科技馆免费开放。".encode("utf-8"), phrase="科技馆免费开放")
_add("子目录/深 层/报告.md", "indexed", "嵌套目录中的文件：基层科普行动计划。".encode("utf-8"), phrase="基层科普行动计划")


# Links, special files, permissions.
@case("link_outside.txt", "skipped", "符号链接.*之外")
def _(p, scratch):
    (scratch / "outside.txt").write_text("语料目录之外的秘密文件。", encoding="utf-8")
    p.symlink_to(scratch / "outside.txt")


@case("link_dangling.txt", "skipped", "不是普通文件|不存在|无法读取")
def _(p, scratch):
    p.symlink_to(p.parent / "no_such_target.txt")


@case("link_dir_outside", "ignored", note="a symlinked directory is not followed (and not reported)")
def _(p, scratch):
    (scratch / "outside_dir").mkdir()
    (scratch / "outside_dir" / "secret.txt").write_text("目录链接之外的机密内容甲乙丙。", encoding="utf-8")
    p.symlink_to(scratch / "outside_dir", target_is_directory=True)


@case("link_to_good.txt", "skipped", "内容完全相同")
def _(p, scratch):
    p.symlink_to(GOOD_A)  # relative, inside the corpus


@case("zz_duplicate_of_good.txt", "skipped", "内容完全相同", note="the alphabetically first copy is indexed")
def _(p, scratch):
    p.write_text(GOOD_A_TEXT, encoding="utf-8")


@case("fifo.txt", "skipped", "不是普通文件", note="a named pipe: reading it would block forever")
def _(p, scratch):
    os.mkfifo(p)


@case("unreadable.txt", "indexed" if CAN_READ_ANYTHING else "failed", "没有读取权限", phrase="权限为零的文件",
      note="chmod 000: root reads it anyway, so as root it is indexed")
def _(p, scratch):
    p.write_text("权限为零的文件：科技创新券发放。", encoding="utf-8")
    p.chmod(0)


def build_corpus(root: Path) -> Path:
    corpus, scratch = root / "corpus", root / "scratch"
    corpus.mkdir()
    scratch.mkdir()
    (corpus / GOOD_A).write_text(GOOD_A_TEXT, encoding="utf-8")
    make_docx(corpus / GOOD_B, [GOOD_B_TEXT])
    for c in CASES:
        p = corpus / c.name
        p.parent.mkdir(parents=True, exist_ok=True)
        c.build(p, scratch)
    return corpus


# -- one index run over everything ------------------------------------------------------------------

@dataclass
class Run:
    settings: object
    report: object
    loaded: list[str]  # sources handed to the loader
    seconds: float
    chunks: dict[str, list]  # source -> indexed chunks


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    corpus = build_corpus(root)
    yield corpus
    for c in CASES:  # let pytest clean up as a normal user too
        p = corpus / c.name
        if p.exists() and not p.is_symlink() and p.is_file():
            p.chmod(0o644)


@pytest.fixture(scope="module")
def run(bad_corpus, embedder) -> Run:
    import rag.index.indexer as indexer
    from rag.search.snapshot import Snapshot

    s = load_settings(env={}, corpus_dir=bad_corpus, index_dir=bad_corpus.parent / "index")
    loaded: list[str] = []
    real = indexer.chunk_file

    def spy(path, source, settings, *rest):
        loaded.append(source)
        return real(path, source, settings, *rest)

    t = time.perf_counter()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(indexer, "chunk_file", spy)
        report = indexer.index_corpus(s, embedder=embedder)  # must not raise
    seconds = time.perf_counter() - t
    chunks: dict[str, list] = {}
    for c in Snapshot.load(s.index_dir).chunks:
        chunks.setdefault(c.source, []).append(c)
    return Run(s, report, loaded, seconds, chunks)


def test_corpus_is_big_enough():
    assert len(CASES) >= 30


@pytest.mark.parametrize("c", CASES, ids=[c.name.encode("ascii", "backslashreplace").decode() for c in CASES])
def test_each_case_gets_a_clear_result(run, c):
    rep = run.report
    if c.name == "unreadable.txt" and CAN_READ_ANYTHING:
        assert c.name in rep.added  # root reads a chmod-000 file: nothing to report
        pytest.skip("running as root: chmod 000 does not stop root from reading, so no permission error to check")
    if c.expect == "indexed":
        assert c.name in rep.added, rep.failed.get(c.name) or rep.skipped.get(c.name)
        text = "\n".join(f"{ch.title} {ch.heading} {ch.text}" for ch in run.chunks.get(c.name, []))
        assert "".join(c.phrase.split()) in "".join(text.split()), text[:300]
        assert "\ufffd" not in text
    elif c.expect == "ignored":
        assert c.name not in rep.failed and c.name not in rep.skipped
        assert not any(src.startswith(c.name + "/") for src in run.chunks)
    else:
        where, other = (rep.skipped, rep.failed) if c.expect == "skipped" else (rep.failed, rep.skipped)
        assert c.name in where, f"expected {c.expect}; failed={rep.failed.get(c.name)} skipped={rep.skipped.get(c.name)}"
        assert c.name not in other and c.name not in rep.added
        reason = where[c.name]
        assert re.search(c.reason, reason), reason
        assert re.search(r"[\u4e00-\u9fff]{2}", reason), reason  # a Chinese reason for users
        assert "处理出错" not in reason  # that is the indexer's catch-all for loader crashes
        assert c.name not in run.chunks


def test_run_finishes_and_good_files_are_searchable(run, embedder):
    from rag.search.retrieval import Retriever

    rep = run.report
    assert GOOD_A in rep.added and GOOD_B in rep.added
    assert not any("处理出错" in r for r in rep.failed.values()), rep.failed  # no loader crashed
    r = Retriever(run.settings, embedder)
    for query, source in (("量子科普嘉年华", GOOD_A), ("青少年航模竞赛参赛代表队", GOOD_B)):
        for mode in ("bm25", "hybrid"):
            hits = r.search(query, k=3, mode=mode)
            assert hits and hits[0].chunk.source == source, (mode, [h.chunk.source for h in hits])
    # Nothing from outside the corpus leaked in through links.
    assert not any("秘密" in c.text or "机密" in c.text for cs in run.chunks.values() for c in cs)
    print(f"\nindexed {len(rep.added)}, skipped {len(rep.skipped)}, failed {len(rep.failed)} in {run.seconds:.1f} s")


def test_every_file_is_accounted_for(run, bad_corpus):
    rep = run.report
    reported = set(rep.added) | set(rep.skipped) | set(rep.failed)
    for dirpath, dirnames, filenames in os.walk(bad_corpus):
        for name in filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
            source = (Path(dirpath) / name).relative_to(bad_corpus).as_posix()
            if source == "link_dir_outside":
                continue  # os.walk does not follow it; not reported (see the case's note)
            assert source in reported, source


def test_oversized_file_is_never_loaded(run):
    reason = run.report.skipped["huge_200mb.txt"]
    assert "200 MB" in reason and "100 MB" in reason
    assert "huge_200mb.txt" not in run.loaded


def test_warnings_are_kept_in_the_manifest(run):
    from rag.index.store import Manifest

    if not COLOPHON.exists():
        pytest.skip(f"../shared not present: {COLOPHON}")
    rec = Manifest.read(run.settings.index_dir).files["colophon_doubled_glyphs.pdf"]
    assert rec.status == "indexed" and any("重影" in w for w in rec.warnings)
    chunk_text = "".join(c.text for c in run.chunks["colophon_doubled_glyphs.pdf"])
    assert "监制制" not in chunk_text


def test_cli_prints_a_line_per_failed_and_skipped_file(run, bad_corpus, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEXIE_")}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "rag.cli", "index", "--wait", "--corpus", str(bad_corpus), "--index", str(tmp_path / "index")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    lines = out.splitlines()
    rep = run.report
    for label, items in (("跳过", rep.skipped), ("失败", rep.failed)):
        for source, reason in items.items():
            want = f"  {label}：{source}（{reason}）"
            assert want in lines, f"missing: {want}\n{out[-3000:]}"
    for source in rep.added:
        assert f"  新增：{source}" in lines
    summary = [x for x in lines if x.startswith("完成：")]
    assert summary and f"跳过 {len(rep.skipped)}，失败 {len(rep.failed)}" in summary[0]


# -- loader details ---------------------------------------------------------------------------------

@pytest.mark.parametrize("enc", ["utf-16-le", "utf-16-be"])
@pytest.mark.parametrize("text", [SENTENCE, "一二三四五六七八九十" * 5, "Mixed 中英文 text 一二三, 2024年。\n第二行。"])
def test_utf16_without_bom(enc, text):
    assert decode_text(text.encode(enc)) == text


def test_utf16_without_bom_whose_bytes_are_all_ascii():
    # 专专协学 in UTF-16 LE is 13 4E 13 4E 4F 53 66 5B: valid ASCII, but full of control codes.
    assert decode_text("专专协学".encode("utf-16-le")) == "专专协学"


def test_utf32_with_bom():
    assert decode_text("\ufeff科协报告".encode("utf-32-le")) == "科协报告"
    assert decode_text("\ufeff科协报告".encode("utf-32-be")) == "科协报告"


def test_mixed_encodings_keep_every_line():
    MIXED_GBK_FIRST.decode("gb18030")  # the trap: GB18030 alone "succeeds" on the whole file
    assert decode_text(MIXED_GBK_FIRST).splitlines() == ["第二部分用GBK编码：科技志愿服务队三百支。", "科协年度报告"]
    lines = ["UTF-8 行：院士专家工作站。", "GBK 行：科普大篷车。", "ASCII line.", "GB18030 行：䶮。"]
    data = b"\n".join(
        line.encode(enc) for line, enc in zip(lines, ["utf-8", "gbk", "ascii", "gb18030"])
    )
    assert decode_text(data).splitlines() == lines


def test_utf8_cut_in_the_middle_of_the_last_character():
    data = "青少年科技创新大赛圆满结束".encode("utf-8")
    for cut in (1, 2):
        assert decode_text(data[:-cut]) == "青少年科技创新大赛圆满结"


def test_gbk_short_strings_still_gbk():
    for s in ["市科协", "科普大篷车进校园", "四服务一加强", "第一章 总则"]:
        assert decode_text(s.encode("gbk")) == s


def test_long_prose_line_is_kept(tmp_path):
    p = tmp_path / "one_line.txt"
    line = "全市科协系统深入开展科普工作，服务科技工作者。" * 6000  # 138,000 characters, no newline
    p.write_text(line, encoding="utf-8")
    assert load(p).pages[0].text == line


def test_long_line_of_data_is_skipped_with_reason(tmp_path):
    p = tmp_path / "dump.txt"
    p.write_text("开头一行正常。\n" + "0123456789abcdef" * 10000 + "\n", encoding="utf-8")
    with pytest.raises(Skipped, match="单行过长"):
        load(p)


@pytest.mark.parametrize("algorithm", ["AES-128", "AES-256"])
def test_aes_pdf_without_cryptography_says_so(tmp_path, algorithm):
    if not importlib.util.find_spec("cryptography"):
        pytest.skip("cryptography not installed: cannot make an AES-encrypted PDF (pip install -e '.[pdf-aes]')")
    p = tmp_path / "aes.pdf"
    make_pdf(tmp_path / "plain.pdf", [["AES 加密的文件"]])
    encrypt_pdf(tmp_path / "plain.pdf", p, user="", owner="x", algorithm=algorithm)
    assert "AES" in "".join(x.text for x in load(p).pages)  # with cryptography: opens without a password
    code = (
        "import sys; sys.modules['cryptography'] = None\n"  # as if not installed
        "from pathlib import Path\nfrom rag.ingest.loaders import load, LoadError\n"
        f"try:\n    load(Path({str(p)!r}))\nexcept LoadError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert "AES" in out.stdout and "cryptography" in out.stdout, out.stdout + out.stderr


def test_pdf_with_text_and_scanned_pages_keeps_text_and_warns(tmp_path):
    from pypdf import PdfReader, PdfWriter

    make_pdf(tmp_path / "t.pdf", [["第一页有文字层：科技社团改革。"]])
    make_image_pdf(tmp_path / "s.pdf", ["第二页是扫描图片"])
    w = PdfWriter()
    for part in ("t.pdf", "s.pdf"):
        w.append(PdfReader(str(tmp_path / part)))
    p = tmp_path / "mixed.pdf"
    with open(p, "wb") as f:
        w.write(f)
    doc = load(p)
    assert [pg.page for pg in doc.pages] == [1] and "科技社团改革" in doc.pages[0].text
    assert any("第 2 页没有文字层" in x and "OCR" in x for x in doc.warnings)


def test_one_broken_pdf_page_does_not_lose_the_others(tmp_path, monkeypatch):
    from pypdf import PageObject

    p = tmp_path / "two.pdf"
    make_pdf(p, [["第一页：正常页面。"], ["第二页：内容流损坏。"]])
    real = PageObject.extract_text

    def flaky(self, *a, **kw):
        text = real(self, *a, **kw)
        if "第二页" in text:
            raise ValueError("broken content stream")
        return text

    monkeypatch.setattr(PageObject, "extract_text", flaky)
    doc = load(p)
    assert [pg.page for pg in doc.pages] == [1]
    assert any("第 2 页无法提取文字" in x for x in doc.warnings)


def test_ocr_enabled_but_not_installed_says_how_to_install(tmp_path, monkeypatch):
    import rag.ingest.ocr

    p = tmp_path / "scan.pdf"
    make_image_pdf(p, ["扫描件"])
    monkeypatch.setattr(rag.ingest.ocr, "_engine", None)
    monkeypatch.setitem(sys.modules, "rapidocr_onnxruntime", None)  # import fails
    with pytest.raises(LoadError, match=r"OCR.*pip install"):
        load(p, ocr=True)


# -- OCR --------------------------------------------------------------------------------------------

OCR_LINES = ["科协年度工作报告", "全市建成科普基地五十二个，", "组建科技志愿服务队三百七十四支。", "院士专家工作站新增十二家。"]


def _need_ocr():
    pytest.importorskip("rapidocr_onnxruntime", reason="OCR extra not installed: pip install -e '.[ocr]'")
    if not CJK_FONT.exists():
        pytest.skip(f"no CJK font to draw the test scan: {CJK_FONT}")


@pytest.mark.slow
def test_ocr_reads_a_generated_scan(tmp_path, out_dir):
    _need_ocr()
    from collections import Counter

    from rag.ingest.ocr import _get_engine, ocr_pdf_page

    p = tmp_path / "scan.pdf"
    make_image_pdf(p, OCR_LINES)
    _get_engine()  # model loading is not part of the per-page time
    t = time.perf_counter()
    text = ocr_pdf_page(p, 1)
    seconds = time.perf_counter() - t
    truth, got = Counter("".join(OCR_LINES)), Counter("".join(text.split()))
    recall = sum(min(n, got[ch]) for ch, n in truth.items()) / sum(truth.values())
    (out_dir / "ocr_speed.txt").write_text(f"seconds_per_page={seconds:.2f} recall={recall:.3f}\n{text}\n", encoding="utf-8")
    print(f"\nOCR: {seconds:.2f} s/page, character recall {recall:.3f}")
    assert recall >= 0.9, text
    assert text.splitlines()[0].replace(" ", "") == OCR_LINES[0]  # reading order: title first


def test_index_with_ocr_enabled(tmp_path, embedder):
    _need_ocr()
    from rag.index.indexer import index_corpus
    from rag.search.snapshot import Snapshot

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    make_image_pdf(corpus / "扫描件.pdf", OCR_LINES)
    s = load_settings(env={}, corpus_dir=corpus, index_dir=tmp_path / "index", ocr=True)
    rep = index_corpus(s, embedder=embedder)
    assert rep.added == ["扫描件.pdf"], (rep.failed, rep.skipped)
    chunks = Snapshot.load(s.index_dir).chunks
    assert chunks and all(c.ocr and c.page == 1 for c in chunks)
    assert "科技志愿服务队" in "".join("".join(c.text for c in chunks).split())


def test_turning_ocr_on_reprocesses_the_scanned_pages_of_an_indexed_pdf(tmp_path, embedder):
    """A PDF indexed with OCR off keeps its text pages; its scanned pages are recorded, and switching
    OCR on reads them (the file itself did not change)."""
    _need_ocr()
    from pypdf import PdfReader, PdfWriter

    from rag.index import store
    from rag.index.indexer import index_corpus
    from rag.search.snapshot import Snapshot

    make_pdf(tmp_path / "t.pdf", [["第一页有文字层：科技社团改革。"]])
    make_image_pdf(tmp_path / "s.pdf", OCR_LINES)
    w = PdfWriter()
    for part in ("t.pdf", "s.pdf"):
        w.append(PdfReader(str(tmp_path / part)))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    with open(corpus / "报告.pdf", "wb") as f:
        w.write(f)
    off = load_settings(env={}, corpus_dir=corpus, index_dir=tmp_path / "index")
    index_corpus(off, embedder=embedder)
    assert store.Manifest.read(off.index_dir).files["报告.pdf"].scanned_pages == [2]
    assert {c.page for c in Snapshot.load(off.index_dir).chunks} == {1}
    rep = index_corpus(off.replace(ocr=True), embedder=embedder)
    assert rep.changed == ["报告.pdf"]
    chunks = Snapshot.load(off.index_dir).chunks
    assert {c.page for c in chunks} == {1, 2} and any(c.ocr and "科普基地" in c.text for c in chunks)
    assert store.Manifest.read(off.index_dir).files["报告.pdf"].scanned_pages == []
