"""The web chat end to end in real headless Chromium, plus upload safety rules."""

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from conftest import PROJECT_ROOT, SHARED, free_port

from rag.serve import kb
from rag.settings import load_settings

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
NEW_DOC = "宁波市科协科普画廊管理办法.txt"




# -- upload rules (no browser needed) ---------------------------------------------------------
@pytest.fixture
def kb_settings(tmp_path):
    (tmp_path / "corpus").mkdir()
    return load_settings(env={}, corpus_dir=tmp_path / "corpus", index_dir=tmp_path / "index", max_upload_mb=1)


@pytest.mark.parametrize("name", ["../evil.txt", "../../etc/cron.d/x.txt", "/etc/passwd.txt", "a/../../b.txt", "..\\..\\win.txt"])
def test_path_traversal_upload_refused_and_nothing_written(kb_settings, tmp_path, name):
    src = tmp_path / "src.txt"
    src.write_text("内容", encoding="utf-8")
    with pytest.raises(kb.UploadRejected):
        kb.save_upload(kb_settings, src, name)
    assert list(kb_settings.corpus_dir.iterdir()) == []
    assert not (tmp_path / "evil.txt").exists()


def test_oversize_and_bad_extension_refused(kb_settings, tmp_path):
    big = tmp_path / "big.txt"
    big.write_bytes(b"a" * (2 * 2**20))
    with pytest.raises(kb.UploadRejected, match="过大"):
        kb.save_upload(kb_settings, big, "big.txt")
    with pytest.raises(kb.UploadRejected, match="不支持"):
        kb.save_upload(kb_settings, big, "x.exe")
    assert list(kb_settings.corpus_dir.iterdir()) == []


def test_odd_names_are_sanitised_inside_corpus(kb_settings, tmp_path):
    src = tmp_path / "s.txt"
    src.write_text("内容", encoding="utf-8")
    p = kb.save_upload(kb_settings, src, "会议 纪要😀<1>.txt").path
    assert p.parent == kb_settings.corpus_dir and p.read_text(encoding="utf-8") == "内容"
    with pytest.raises(kb.UploadRejected):
        kb.resolve_in_corpus(kb_settings, "../index/manifest.json")


def test_upload_with_an_existing_name_keeps_the_old_file_and_says_so(kb_settings, tmp_path):
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("第一版内容", encoding="utf-8")
    second.write_text("第二版内容", encoding="utf-8")
    kb.save_upload(kb_settings, first, "办法.txt")
    same = kb.save_upload(kb_settings, first, "办法.txt")
    assert "未改动" in same.message and same.replaced is None
    new = kb.save_upload(kb_settings, second, "办法.txt")
    assert new.path.read_text(encoding="utf-8") == "第二版内容"
    assert new.replaced and new.replaced.read_text(encoding="utf-8") == "第一版内容"
    assert "已替换同名文件" in new.message and new.replaced.name in new.message
    # The kept version is not a document of the knowledge base: neither listed nor indexed.
    assert [r.source for r in kb.list_documents(kb_settings)] == ["办法.txt"]
    from rag.index.indexer import scan_corpus

    assert list(scan_corpus(kb_settings.corpus_dir)[0]) == ["办法.txt"]


@pytest.mark.parametrize("env, overrides, expected", [
    ({}, {}, ("127.0.0.1", 7860)),
    ({"GRADIO_SERVER_PORT": "7999", "GRADIO_SERVER_NAME": "0.0.0.0"}, {}, ("0.0.0.0", 7999)),
    # The kexie setting wins over Gradio's variable, from the environment or from kexie.toml.
    ({"GRADIO_SERVER_PORT": "7999", "KEXIE_PORT": "7001"}, {"port": 7001}, ("127.0.0.1", 7001)),
    ({"GRADIO_SERVER_NAME": "0.0.0.0"}, {"host": "127.0.0.2"}, ("127.0.0.2", 7860)),
    ({"GRADIO_SERVER_PORT": "not-a-port"}, {}, ("127.0.0.1", 7860)),  # must not fire on junk
])
def test_server_address_honours_gradio_variables(env, overrides, expected):
    from rag.serve.web import server_address

    assert server_address(load_settings(env={}, **overrides), env) == expected


# -- the running app --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def app_url(corpus_index, tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian chromium not installed (scripts/test-deps.sh installs it as root)")
    root = tmp_path_factory.mktemp("web")
    shutil.copytree(corpus_index.corpus_dir, root / "corpus")
    shutil.copytree(corpus_index.index_dir, root / "index")  # an existing index: no re-embedding
    port = free_port()
    env = {**os.environ, "KEXIE_CORPUS_DIR": str(root / "corpus"), "KEXIE_INDEX_DIR": str(root / "index"),
           "KEXIE_PORT": str(port), "HF_HUB_OFFLINE": "1"}
    log = open(root / "app.log", "w")
    proc = subprocess.Popen([sys.executable, str(PROJECT_ROOT / "app.py")], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail("app exited: " + (root / "app.log").read_text())
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("app did not start in 120 s")
    yield url, root
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def page(app_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.goto(app_url[0])
        yield pg
        browser.close()


def ask(page, question: str):
    page.get_by_role("tab", name="问答").click()
    page.click("#clear")
    # Let the clear land first: a late clear would wipe the new answer's citation cards.
    page.wait_for_function("document.querySelector('#citations').innerText.includes('回答的引用出处')", timeout=60000)
    page.fill("#question textarea", question)
    page.click("#send")
    page.wait_for_function("document.querySelector('#citations').innerText.includes('[1]') || "
                           "document.querySelector('#citations').innerText.includes('未找到')", timeout=240000)
    time.sleep(0.5)


def test_chat_streams_answer_with_citation_card(page, out_dir):
    page.fill("#question textarea", "什么是四服务一加强")
    page.click("#send")
    # The status line appears before the answer: the reply is streamed, not delivered at once.
    page.wait_for_function("document.querySelector('#chatbot').innerText.includes('正在检索')", timeout=30000)
    page.wait_for_selector("#cite-1", timeout=90000)
    chat = page.inner_text("#chatbot")
    assert "服务科技工作者" in chat and "加强自身建设" in chat
    card = page.inner_text("#cite-1")
    assert "连云港市科协" in card and "四服务一加强" in card
    assert page.locator("#cite-1 mark").count() >= 1  # supporting sentence highlighted
    page.click("#chatbot a[href='#cite-1']")
    page.screenshot(path=str(out_dir / "web_chat.png"), full_page=True)
    href = page.get_attribute("#cite-1 a", "href")
    with urllib.request.urlopen(page.url.rstrip("/") + href) as r:  # the source file can be opened
        assert "四服务一加强" in r.read().decode("utf-8")


def test_only_corpus_files_are_served(page, app_url):
    url = app_url[0].rstrip("/")
    for target in ("/etc/passwd", str(app_url[1] / "index" / "manifest.json"), str(app_url[1] / "app.log")):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{url}/gradio_api/file={target}")
        assert e.value.code in (403, 404)


def test_upload_reindex_ask_delete(page, app_url, out_dir, tmp_path):
    src = SHARED / "corpus-extra" / NEW_DOC
    doc = tmp_path / NEW_DOC
    if src.exists():
        shutil.copy(src, doc)
    else:  # without ../shared the test writes its own document
        doc.write_text("宁波市科协科普画廊管理办法\n\n第一条 科普画廊由市科协统一规划，各区县科协负责日常管理和内容更新。", encoding="utf-8")
    page.get_by_role("tab", name="知识库").click()
    page.set_input_files("#upload input[type=file]", str(doc))
    page.click("#upload-btn")
    page.wait_for_function("document.querySelector('#kb-msg').innerText.includes('索引完成')", timeout=180000)
    assert "已上传" in page.inner_text("#kb-msg")
    table = page.inner_text("#doc-table")
    assert NEW_DOC in table and "已索引" in table
    page.screenshot(path=str(out_dir / "web_kb.png"), full_page=True)
    assert (app_url[1] / "corpus" / NEW_DOC).exists()

    ask(page, "宁波市科协的科普画廊由谁负责管理")
    assert NEW_DOC in page.inner_text("#citations")
    if src.exists():  # a regulation: the card and the answer quote the article as staff do
        assert re.search(r"《宁波市科协科普画廊管理办法》第[一二三四五六七八九十]+条", page.inner_text("#citations"))
        assert "《宁波市科协科普画廊管理办法》第" in page.inner_text("#chatbot")
    page.screenshot(path=str(out_dir / "web_new_doc.png"), full_page=True)

    page.get_by_role("tab", name="知识库").click()
    page.locator("#delete-pick input").fill(NEW_DOC)
    page.keyboard.press("Enter")
    page.click("#delete-btn")
    page.wait_for_function("document.querySelector('#kb-msg').innerText.includes('已删除')", timeout=120000)
    page.wait_for_function("document.querySelector('#kb-msg').innerText.includes('索引完成')", timeout=120000)
    assert not (app_url[1] / "corpus" / NEW_DOC).exists()
    ask(page, "宁波市科协的科普画廊由谁负责管理")
    assert NEW_DOC not in page.inner_text("#citations")


def test_login_required_when_configured(kb_settings):
    import urllib.parse

    from rag.serve.web import build_app, launch

    s = kb_settings.replace(auth_user="staff", auth_password="pa55-word", port=free_port())
    demo = build_app(s)
    launch(s, demo, block=False)
    try:
        base = f"http://127.0.0.1:{s.port}"
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(base + "/config")
        assert e.value.code == 401
        bad = urllib.parse.urlencode({"username": "staff", "password": "wrong"}).encode()
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(base + "/login", data=bad)
        assert e.value.code in (400, 401)
        good = urllib.parse.urlencode({"username": "staff", "password": "pa55-word"}).encode()
        assert urllib.request.urlopen(base + "/login", data=good).status == 200
    finally:
        demo.close()


def test_default_bind_is_loopback():
    assert load_settings(env={}).host == "127.0.0.1"


@pytest.mark.parametrize("text, support, spans, want", [
    # By offsets: the second "服务队" is the cited one, so it is the one marked (substring search marks the first).
    ("服务队。组建服务队。", ["服务队。"], [(6, 10)], "服务队。组建<mark>服务队。</mark>"),
    ("甲乙丙丁。戊己。", [], [(0, 5), (3, 8)], "<mark>甲乙丙丁。</mark><mark>戊己。</mark>"),  # overlaps marked once
    ("a<b。c", [], [(0, 4)], "<mark>a&lt;b。</mark>c"),  # escaped, never raw HTML
    # Without offsets (an LLM's sentence): found by text; a sentence the passage lacks marks nothing.
    ("组建服务队。其他。", ["组建服务队。"], [], "<mark>组建服务队。</mark>其他。"),
    ("组建服务队。", ["不在段落中。"], [], "组建服务队。"),
])
def test_citation_highlight(text, support, spans, want):
    from rag.serve.web import _highlight

    assert _highlight(text, support, spans) == want
