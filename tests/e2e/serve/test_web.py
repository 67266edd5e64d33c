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
from conftest import PROJECT_ROOT, SHARED, copy_index, free_port, shared

from rag.serve import kb
from rag.settings import load_settings

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
NEW_DOC = "宁波市科协科普画廊管理办法.txt"




# -- upload rules (no browser needed) ---------------------------------------------------------
@pytest.fixture
def kb_settings(tmp_path):
    (tmp_path / "corpus").mkdir()
    return load_settings(env={}, corpus_dir=tmp_path / "corpus", index_dir=tmp_path / "index", max_file_mb=1)


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
    with pytest.raises(kb.UploadRejected, match=r"不支持的文件类型 \.exe，支持 .*\.ofd"):  # names what is supported
        kb.save_upload(kb_settings, big, "x.exe")
    assert list(kb_settings.corpus_dir.iterdir()) == []
    ofd = shared("fixtures", "ofd", "关于加快南货场铁路涵洞下穿建设的函.ofd")
    assert kb.save_upload(kb_settings, ofd, "函.ofd").path.name == "函.ofd"


def test_every_type_the_index_reads_can_be_uploaded(kb_settings, tmp_path):
    """The upload filter comes from the loaders' list (.markdown and .xlsm were indexed but refused on upload);
    an admin may still narrow it."""
    from rag.ingest.loaders import SUPPORTED

    src = tmp_path / "s.txt"
    src.write_text("内容", encoding="utf-8")
    assert kb.upload_types(kb_settings) == SUPPORTED and len(set(SUPPORTED)) == len(SUPPORTED)
    for ext in (".markdown", ".xlsm", ".htm", ".ofd"):
        assert kb.save_upload(kb_settings, src, f"a{ext}").path.suffix == ext
    narrowed = kb_settings.replace(upload_extensions=(".txt",))
    with pytest.raises(kb.UploadRejected, match=r"不支持的文件类型 \.md，支持 \.txt$"):
        kb.save_upload(narrowed, src, "b.md")


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
    from rag.ingest.pipeline import scan_corpus

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
def start_app(root, port, env):
    log = open(root / "app.log", "a")
    proc = subprocess.Popen([sys.executable, str(PROJECT_ROOT / "app.py")], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc
        except OSError:
            if proc.poll() is not None:
                pytest.fail("app exited: " + (root / "app.log").read_text())
            time.sleep(0.5)
    proc.kill()
    pytest.fail("app did not start in 120 s")


@pytest.fixture(scope="module")
def app_url(corpus_index, tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian chromium not installed (scripts/test-deps.sh installs it as root)")
    root = tmp_path_factory.mktemp("web")
    copy_index(corpus_index, root)
    port = free_port()
    env = {**os.environ, "KEXIE_CORPUS_DIR": str(root / "corpus"), "KEXIE_INDEX_DIR": str(root / "index"),
           "KEXIE_PORT": str(port), "HF_HUB_OFFLINE": "1"}
    app = {"proc": start_app(root, port, env), "env": env, "port": port}
    yield f"http://127.0.0.1:{port}/", root, app
    app["proc"].terminate()
    app["proc"].wait(timeout=20)


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
    if page.locator("#chatbot .message").count():  # a fresh page has nothing to clear (and no clear to wait for)
        page.click("#clear")
        # Let the clear land first: a late clear would wipe the new question and the answer's citation cards.
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
    page.wait_for_selector("#cite-1-1", timeout=90000)
    chat = page.inner_text("#chatbot")
    assert "服务科技工作者" in chat and "加强自身建设" in chat
    card = page.inner_text("#cite-1-1")
    assert "连云港市科协" in card and "四服务一加强" in card
    assert page.locator("#cite-1-1 mark").count() >= 1  # supporting sentence highlighted
    page.click("#chatbot a[href='#cite-1-1']")
    page.screenshot(path=str(out_dir / "web_chat.png"), full_page=True)
    href = page.get_attribute("#cite-1-1 a", "href")
    with urllib.request.urlopen(page.url.rstrip("/") + href) as r:  # the source file can be opened
        assert "四服务一加强" in r.read().decode("utf-8")


def test_page_has_no_gradio_footer(app_url):
    import json

    url, _, _ = app_url
    with urllib.request.urlopen(url + "config", timeout=30) as r:
        assert json.loads(r.read())["footer_links"] == []


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
    # Answered from BM25 while the new chunks' vectors were made in the background; the tab shows
    # their progress (向量索引 N%…) until the app's own thread has finished them.
    wait_text(page, "#vector-status", "向量索引已完成", 180000)
    page.locator("#delete-pick input").fill(NEW_DOC)
    page.keyboard.press("Enter")
    page.click("#delete-btn")  # asks first, naming the document; 取消 removes nothing
    wait_text(page, "#confirm-doc", NEW_DOC, 30000)
    page.click("#confirm-doc-no")
    page.wait_for_selector("#confirm-doc", state="hidden", timeout=30000)
    assert (app_url[1] / "corpus" / NEW_DOC).exists()
    page.click("#delete-btn")
    wait_text(page, "#confirm-doc", "7 天内", 30000)
    page.click("#confirm-doc-yes")
    page.wait_for_function("document.querySelector('#kb-msg').innerText.includes('已删除')", timeout=120000)
    page.wait_for_function("document.querySelector('#kb-msg').innerText.includes('索引完成')", timeout=120000)
    assert not (app_url[1] / "corpus" / NEW_DOC).exists()
    ask(page, "宁波市科协的科普画廊由谁负责管理")
    assert NEW_DOC not in page.inner_text("#citations")


def wait_text(page, selector: str, text: str, timeout: int = 30000):
    """Wait until the element exists and shows the text (after a reload the page renders late)."""
    page.wait_for_function("([s, t]) => { const e = document.querySelector(s); return !!e && e.innerText.includes(t); }",
                           arg=[selector, text], timeout=timeout)


def last_answer_turn(page):
    return page.locator("#chatbot button[aria-label='Dislike']").last


def choose(page, selector: str, option: str):
    page.locator(f"{selector} input").click()
    page.get_by_role("option", name=option).click()


def open_tab(page, name):
    page.get_by_role("tab", name=name).click()
    if name == "知识库":  # the managed base is filled in by the page's load event
        wait_text(page, "#kb-info", "当前知识库", 30000)


def test_each_answer_keeps_its_own_sources_and_feedback(page, app_url, out_dir):
    """Three answers in one conversation: [1] of the first opens the first answer's card (not the latest's);
    the question box is locked while an answer is written; 👎 on the second is recorded against the second;
    a reopened conversation shows every answer's sources; the chat's own 🗑 starts a new conversation."""
    ask(page, "青岛市科协组建了多少支科技志愿服务队")
    for q in ("那济宁呢", "北京市科协2023年预算是多少"):
        n = page.locator("#citations details.turn-cites").count()
        page.fill("#question textarea", q)
        # a fast answer can lock and unlock the box between two polls: record every state it passes through
        page.evaluate("""() => { window.sawBusy = false;
            const seen = () => { const t = document.querySelector('#question textarea');
                if (t && t.disabled && (t.placeholder || '').includes('正在回答')) window.sawBusy = true; };
            new MutationObserver(seen).observe(document.body, {subtree: true, childList: true, attributes: true,
                attributeFilter: ['disabled', 'placeholder']}); }""")
        page.click("#send")
        page.wait_for_function("window.sawBusy", timeout=30000)
        page.wait_for_function(f"document.querySelectorAll('#citations details.turn-cites').length > {n}", timeout=240000)
        page.wait_for_function("!document.querySelector('#question textarea').disabled", timeout=60000)
    assert page.locator("#citations details.turn-cites").count() == 3
    assert page.locator("#citations details.turn-cites[open]").get_attribute("data-turn") == "3"
    # [1] in the first answer opens the first answer's card 1, a 青岛 passage
    page.locator("#chatbot a[href='#cite-1-1']").first.click()
    page.wait_for_function("document.querySelector('#cite-1-1').classList.contains('flash')", timeout=10000)
    assert page.locator("details.turn-cites[data-turn='1']").get_attribute("open") is not None
    assert "青岛" in page.inner_text("#cite-1-1")
    page.screenshot(path=str(out_dir / "web_multi_turn.png"), full_page=True)
    # 👎 on the second answer (济宁), not the last one
    page.locator("#chatbot button[aria-label='Dislike']").nth(1).click()
    page.wait_for_selector("#feedback-form textarea", timeout=30000)
    wait_text(page, "#fb-msg", "第 2 个回答", 30000)
    page.fill("#fb-comment textarea", "第二问")
    page.click("#fb-submit")
    wait_text(page, "#fb-msg", "已提交", 30000)
    open_tab(page, "反馈")  # it shows the new feedback by itself, no 刷新 needed
    wait_text(page, "#fb-table", "第二问", 30000)
    root = app_url[1]
    env = {**os.environ, "KEXIE_CORPUS_DIR": str(root / "corpus"), "KEXIE_INDEX_DIR": str(root / "index")}
    out = root / "fb-multi.jsonl"
    r = subprocess.run([sys.executable, "-m", "rag.cli", "feedback", "export", "--out", str(out)], env=env,
                       capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert r.returncode == 0, r.stderr
    import json
    [item] = [x for x in map(json.loads, out.read_text(encoding="utf-8").splitlines())
              if x["feedback"]["comment"] == "第二问"]
    assert item["question"] == "那济宁呢" and item["feedback"]["rating"] == -1
    # reopened: every answer's sources
    page.get_by_role("tab", name="问答").click()
    page.reload()
    wait_text(page, "#conv-list", "青岛市科协组建了多少支", 60000)
    page.locator("#conv-list label", has_text="青岛市科协组建了多少支").first.click()
    page.wait_for_function("document.querySelectorAll('#citations details.turn-cites').length == 3", timeout=30000)
    assert "青岛" in page.text_content("#cite-1-1")  # folded: an earlier answer's
    # the chat's own clear icon: a new conversation, nothing hidden carried over
    page.locator("#chatbot button[aria-label='Clear'], #chatbot button[aria-label*='清']").first.click()
    wait_text(page, "#citations", "回答的引用出处", 30000)
    page.fill("#question textarea", "那济宁呢")
    page.click("#send")
    page.wait_for_function("document.querySelectorAll('#citations details.turn-cites').length == 1 || "
                           "document.querySelector('#citations').innerText.includes('未找到')", timeout=240000)
    assert page.locator("#citations details.turn-cites").count() == 1


def _contrast(fg: str, bg: str) -> float:
    """WCAG contrast ratio of two computed CSS colours ("rgb(r, g, b)")."""
    def lum(c: str) -> float:
        r, g, b = (int(x) / 255 for x in re.findall(r"[\d.]+", c)[:3])
        f = lambda v: v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4  # noqa: E731
        return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b)
    hi, lo = sorted((lum(fg), lum(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


CARD_COLOURS = """() => { const c = document.querySelector('#citations .cite-card .cite-text');
    const card = c.closest('.cite-card'); return [getComputedStyle(c).color, getComputedStyle(card).backgroundColor]; }"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_citation_cards_are_readable_in_both_colour_schemes(page, app_url, out_dir, scheme):
    pg = page.context.browser.new_page(viewport={"width": 1400, "height": 1000}, color_scheme=scheme)
    try:
        pg.goto(app_url[0] + f"?__theme={scheme}")
        ask(pg, "青岛市科协组建了多少支科技志愿服务队")
        pg.wait_for_selector("#citations .cite-card", timeout=60000)
        fg, bg = pg.evaluate(CARD_COLOURS)
        assert _contrast(fg, bg) >= 4.5, (scheme, fg, bg)
        pg.screenshot(path=str(out_dir / f"web_cards_{scheme}.png"), full_page=True)
        # The in-document viewer follows the scheme too: its text and its highlight stay readable.
        pg.locator("#citations details[open] a.view-link").first.click()
        pg.frame_locator("#kx-viewer iframe").locator("mark, .box").first.wait_for(timeout=30000)
        body, mark = pg.locator("#kx-viewer iframe").evaluate(
            "el => { const d = el.contentDocument, s = x => getComputedStyle(x); const m = d.querySelector('mark');"
            " return [[s(d.body).color, s(d.body).backgroundColor], m ? [s(m).color, s(m).backgroundColor] : null]; }")
        assert _contrast(*body) >= 4.5, (scheme, body)
        assert mark is None or _contrast(*mark) >= 4.5, (scheme, mark)
        pg.screenshot(path=str(out_dir / f"web_viewer_{scheme}.png"))
        pg.click("#kx-viewer .kx-close")
    finally:
        pg.close()


def test_open_source_shows_the_passage_in_its_document(page, out_dir):
    """打开原文 opens the document over the page, the cited sentence marked and scrolled into view; ‹ › step
    through this answer's citations; the overlay closes back to the chat."""
    ask(page, "连云港市科协十届三次全委会议提出了哪些工作")
    links = page.locator("#citations details[open] a.view-link")
    n = links.count()
    assert n >= 1
    links.first.click()
    page.wait_for_selector("#kx-viewer.open iframe", timeout=10000)
    frame = page.frame_locator("#kx-viewer iframe")
    frame.locator("mark, .box").first.wait_for(timeout=30000)
    state = page.locator("#kx-viewer iframe").evaluate(
        "el => { const m = el.contentDocument.querySelector('mark, .box'); "
        "return {top: m.getBoundingClientRect().top, height: el.contentWindow.innerHeight}; }")
    assert 0 <= state["top"] < state["height"], state  # scrolled into view
    assert frame.locator("header").inner_text().strip()  # the file and where the passage is
    first_src = page.locator("#kx-viewer iframe").get_attribute("src")
    assert page.locator("#kx-viewer .kx-prev").is_disabled()
    assert page.locator("#kx-viewer .kx-next").is_disabled() == (n == 1)
    assert "下载" in page.inner_text("#kx-viewer .kx-bar")  # download stays available
    page.screenshot(path=str(out_dir / "web_viewer.png"))
    if n > 1:
        page.click("#kx-viewer .kx-next")
        page.wait_for_function(f"document.querySelector('#kx-viewer iframe').getAttribute('src') !== {first_src!r}")
        assert not page.locator("#kx-viewer .kx-prev").is_disabled()
    page.click("#kx-viewer .kx-close")
    assert not page.locator("#kx-viewer").is_visible()


COPY_CASES = [
    "青岛市科协组建了374支科技志愿服务队[1]。",
    "详见 https://www.cast.org.cn/a[b] 与 www.kx.cn，依据[2][3]",
    "公式 a<b>c，反斜杠 \\ 与字面的 [[1]](#cite-1) 与 [](#turn-x)",
    "第一问：…[1]\n\n第二问：资料中未找到第二问的答案。",
]


def test_copied_answer_has_no_link_markup(page, app_url):
    """What the copy button puts on the clipboard is the answer as written: [n] plain, no card links, no
    turn marker, no escapes (the page's kxPlain inverts answer_markdown)."""
    from rag.serve.render import answer_markdown, turn_marker

    for answer in COPY_CASES:
        shown = answer_markdown(answer, 2) + "\n\n" + turn_marker("ab" * 16)
        assert page.evaluate("t => kxPlain(t)", shown) == answer, shown
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=app_url[0].rstrip("/"))
    ask(page, "青岛市科协组建了多少支科技志愿服务队")
    page.locator("#chatbot .message").last.hover()
    page.locator("#chatbot button[aria-label='Copy message'], #chatbot button[title='Copy message']").last.click()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert "[1]" in copied and "#cite-" not in copied and "#turn-" not in copied and "374" in copied, copied


def test_phone_shows_the_question_box_and_the_answer_first(page, app_url, out_dir):
    """At 390×844 the question box and the latest answer are on the first screen; the conversation list and
    the exports come after the chat."""
    pg = page.context.browser.new_page(viewport={"width": 390, "height": 844})
    try:
        pg.goto(app_url[0])
        ask(pg, "青岛市科协组建了多少支科技志愿服务队")
        pg.evaluate("window.scrollTo(0, 0)")
        box = pg.locator("#question textarea").bounding_box()
        bubble = pg.locator("#chatbot .message").last.bounding_box()
        assert box["y"] + box["height"] <= 844, box
        assert bubble["y"] < 844, bubble
        assert pg.locator("#conv-list").bounding_box()["y"] > box["y"]  # the sidebar comes after the chat
        pg.screenshot(path=str(out_dir / "web_phone.png"))
        # [n] opens its source in a sheet over the chat, with a way back.
        pg.locator("#chatbot a[href^='#cite-']").first.click()
        pg.wait_for_selector("#kx-sheet.open .cite-card", timeout=10000)
        sheet = pg.locator("#kx-sheet").bounding_box()
        assert sheet["y"] < 844 and sheet["y"] + sheet["height"] <= 845, sheet
        assert "[1]" in pg.inner_text("#kx-sheet")
        pg.screenshot(path=str(out_dir / "web_phone_sheet.png"))
        pg.click("#kx-sheet .kx-back")
        assert not pg.locator("#kx-sheet").is_visible()
    finally:
        pg.close()


def test_conversation_survives_a_reload(page, out_dir):
    ask(page, "聊城市科普大篷车开进了哪些地方")
    wait_text(page, "#conv-list", "聊城市科普大篷车", 30000)
    answer = page.inner_text("#chatbot")
    page.reload()
    wait_text(page, "#conv-list", "聊城市科普大篷车", 60000)
    assert "聊城" not in page.inner_text("#chatbot")  # a fresh page starts a new chat
    page.locator("#conv-list label", has_text="聊城市科普大篷车").first.click()
    wait_text(page, "#chatbot", "聊城市科普大篷车开进了哪些地方", 30000)
    page.wait_for_selector("#cite-1-1", timeout=30000)
    assert answer.split("\n")[-1][:20] in page.inner_text("#chatbot")
    # Export as Markdown: the answer and its sources.
    page.click("#conv-export-md")
    wait_text(page, "#conv-msg", "已导出", 30000)
    page.screenshot(path=str(out_dir / "web_history.png"), full_page=True)


def test_dislike_with_correction_becomes_an_eval_question(page, app_url, tmp_path, out_dir):
    ask(page, "青岛市科协组建了多少支科技志愿服务队")
    wait_text(page, "#conv-list", "青岛市科协组建", 30000)
    last_answer_turn(page).click()
    page.wait_for_selector("#feedback-form textarea", timeout=30000)
    page.fill("#fb-comment textarea", "想要的是队伍数量")
    page.fill("#fb-correction textarea", "374支")
    page.click("#fb-submit")
    wait_text(page, "#fb-msg", "已提交", 30000)
    open_tab(page, "反馈")
    page.check("#fb-only-down input")
    wait_text(page, "#fb-table", "374支", 30000)
    page.screenshot(path=str(out_dir / "web_feedback.png"), full_page=True)
    root = app_url[1]
    out, run = tmp_path / "feedback.jsonl", tmp_path / "run"
    env = {**os.environ, "KEXIE_CORPUS_DIR": str(root / "corpus"), "KEXIE_INDEX_DIR": str(root / "index")}
    r = subprocess.run([sys.executable, "-m", "rag.cli", "feedback", "export", "--out", str(out)], env=env,
                       capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert r.returncode == 0, r.stderr
    import json
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    [item] = [x for x in lines if x["question"] == "青岛市科协组建了多少支科技志愿服务队"]
    assert item["answer"] == "374支" and item["must_include"] == ["374支"] and item["evidence"]
    r = subprocess.run([sys.executable, "-m", "rag.cli", "eval", str(out), "--out", str(run)], env=env,
                       capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    results = [json.loads(x) for x in (run / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert any(x["question"] == item["question"] and "374" in x["answer"] for x in results)
    open_tab(page, "问答")


def test_chunk_view_and_retrieval_test(page, out_dir):
    open_tab(page, "知识库")
    doc = "连云港市科协_十届三次全委会议讲话和工作报告.txt"
    page.locator("#chunk-view").get_by_text("查看段落").click()
    page.locator("#chunk-doc input").fill(doc)
    page.keyboard.press("Enter")
    wait_text(page, "#chunk-table", "连云港市科学技术协会文件", 30000)  # its first chunk, as indexed
    assert "反馈" in page.inner_text("#chunk-table")  # 赞/踩 on answers that cited each passage
    page.locator("#hit-test").get_by_text("命中测试").click()
    page.fill("#hit-query textarea", "什么是四服务一加强")
    page.click("#hit-btn")
    wait_text(page, "#hit-msg", "共 ", 60000)
    wait_text(page, "#hit-table", ".txt", 30000)
    ranked = re.findall(r"\S+\.txt", page.inner_text("#hit-table"))
    assert ranked[0] == doc  # rank 1 (rows in rank order)
    page.screenshot(path=str(out_dir / "web_chunks.png"), full_page=True)
    open_tab(page, "问答")


def test_two_knowledge_bases_switch(page, app_url, tmp_path, out_dir):
    open_tab(page, "知识库")
    page.fill("#kb-name textarea", "舟山知识库")
    page.click("#kb-create")
    wait_text(page, "#kb-msg", "已创建知识库", 120000)
    wait_text(page, "#kb-info", "舟山知识库", 30000)
    doc = tmp_path / "舟山市海洋科普基地管理办法.txt"
    doc.write_text("舟山市海洋科普基地管理办法\n\n第一条 舟山市海洋科普基地由舟山市科协统一认定，各县区科协负责日常管理。\n\n"
                   "第二条 海洋科普基地每年至少举办六次海洋主题科普活动。\n\n第三条 本办法自二〇二四年三月一日起施行。\n",
                   encoding="utf-8")
    page.set_input_files("#upload input[type=file]", str(doc))
    page.click("#upload-btn")
    wait_text(page, "#kb-msg", "索引完成（舟山知识库）", 180000)
    assert "宁波" not in page.inner_text("#upload")  # the box was emptied after the last upload
    assert not (app_url[1] / "corpus" / doc.name).exists()  # not in the default base's folder
    open_tab(page, "问答")
    pick = page.locator("#kb-pick")
    pick.locator("input").click()
    page.get_by_role("option", name="舟山知识库").click()
    page.keyboard.press("Escape")
    ask(page, "舟山市海洋科普基地每年至少举办几次海洋主题科普活动")
    cites = page.inner_text("#citations")
    assert doc.name in cites and "知识库：舟山知识库" in cites
    page.screenshot(path=str(out_dir / "web_kbs.png"), full_page=True)
    # Only the default base again: the new document is out of scope.
    pick.locator("input").click()
    page.keyboard.press("Backspace")  # removes the last chosen base
    page.keyboard.press("Escape")
    page.locator("#question textarea").click()  # closes the option list
    ask(page, "舟山市海洋科普基地每年至少举办几次海洋主题科普活动")
    assert doc.name not in page.inner_text("#citations")
    assert "舟山知识库" not in page.inner_text("#kb-pick")
    # Reopening the first conversation (newest first: the second of the two) re-selects the bases it asked.
    wait_text(page, "#conv-list", "舟山市海洋科普基地", 30000)
    page.locator("#conv-list label", has_text="舟山市海洋科普基地").nth(1).click()
    wait_text(page, "#kb-pick", "舟山知识库", 30000)
    # Deleting asks first, naming the conversation; 取消 keeps it.
    page.click("#conv-delete")
    wait_text(page, "#confirm-conv", "舟山市海洋科普基地", 30000)
    assert "1 问" in page.inner_text("#confirm-conv")
    page.click("#confirm-conv-no")
    page.wait_for_selector("#confirm-conv", state="hidden", timeout=30000)
    assert page.locator("#conv-list label", has_text="舟山市海洋科普基地").count() == 2
    # A base: the confirmation names it and its documents; deleted, it waits in the recycle bin and comes back.
    open_tab(page, "知识库")
    choose(page, "#kb-manage", "舟山知识库")
    wait_text(page, "#kb-info", "舟山知识库", 30000)
    page.click("#kb-delete")
    wait_text(page, "#confirm-kb", "个文档）", 30000)
    n = len(kb.list_documents(load_settings(env={}, corpus_dir=next((app_url[1] / "data" / "kbs").glob("*/corpus")),
                                            index_dir=app_url[1] / "unused")))
    assert f"含 {n} 个文档" in page.inner_text("#confirm-kb") and n >= 1
    assert "舟山知识库" in page.inner_text("#confirm-kb")
    page.click("#confirm-kb-yes")
    wait_text(page, "#kb-msg", "已删除知识库：舟山知识库", 60000)
    page.locator("#recycle").get_by_text("回收站").click()
    wait_text(page, "#recycle-table", "舟山知识库", 30000)
    choose(page, "#recycle-pick", "知识库“舟山知识库”")
    page.click("#recycle-restore")
    wait_text(page, "#kb-msg", "已恢复知识库“舟山知识库”", 60000)
    page.screenshot(path=str(out_dir / "web_recycle.png"), full_page=True)
    open_tab(page, "问答")


def test_uploaded_faq_answers_a_paraphrase_first(page, app_url, tmp_path, out_dir):
    faq = tmp_path / "常见问题.csv"
    faq.write_text("question,answer\n青岛市科协组建了多少支科技志愿服务队？,青岛组建了374支科技志愿服务队。\n"
                   "什么是四服务一加强？,服务科技工作者、服务创新驱动发展、服务全民科学素质提高、服务党和政府科学决策，加强自身建设。\n",
                   encoding="utf-8")
    open_tab(page, "知识库")
    choose(page, "#kb-manage", "默认知识库")  # an earlier test left another base selected
    wait_text(page, "#kb-info", "当前知识库：默认知识库", 30000)
    page.locator("#faq-section").get_by_text("标准问答").first.click()
    page.set_input_files("#faq-upload input[type=file]", str(faq))
    page.click("#faq-upload-btn")
    wait_text(page, "#faq-table", "青岛组建了374支", 60000)
    assert (app_url[1] / "faq" / faq.name).exists()
    open_tab(page, "问答")
    ask(page, "青岛科技志愿服务队一共有多少支？")
    wait_text(page, "#citations", "标准答案", 30000)
    card = page.inner_text(".faq-card")
    assert "青岛组建了374支科技志愿服务队" in card and "常见问题.csv 第 2 行" in card
    chat = page.inner_text("#chatbot")
    assert "【标准答案】" in chat and "[1]" in chat  # the document citations beneath it
    page.screenshot(path=str(out_dir / "web_faq.png"), full_page=True)
    ask(page, "济宁注册的科技志愿者有多少人？")  # a near miss gets no curated answer
    assert "标准答案" not in page.inner_text("#citations")


def test_eval_tab_is_in_the_app(page):
    """The 评测 tab itself is tested end to end in test_evaltab.py; here: it is wired into the app."""
    open_tab(page, "评测")
    page.wait_for_selector("#eval-start", timeout=30000)
    assert page.input_value("#eval-kb input") == "默认知识库"
    open_tab(page, "问答")


def test_login_required_when_configured(kb_settings):
    import urllib.parse

    from rag.serve.kbs import Registry
    from rag.serve.links import Signer
    from rag.serve.server import serve
    from rag.serve.web import build_app

    s = kb_settings.replace(auth_user="staff", auth_password="pa55-word", port=free_port())
    registry, signer = Registry(s), Signer(s.data_root)
    running = serve(s, build_app(s, registry=registry, signer=signer), registry, signer, block=False)
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
        running.close()


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
    from rag.serve.render import _highlight

    assert _highlight(text, support, spans) == want


def test_conversations_survive_a_restart(page, app_url):
    """Last of the browser tests: it restarts the app."""
    app = app_url[2]
    app["proc"].terminate()
    app["proc"].wait(timeout=20)
    app["proc"] = start_app(app_url[1], app["port"], app["env"])
    # Gradio's page may be navigating itself as the server comes back: a navigation that lost that race is tried again.
    for attempt in range(3):
        try:
            page.goto(app_url[0])
            break
        except Exception as e:  # playwright's Error: "net::ERR_ABORTED; maybe frame was detached?"
            if attempt == 2:
                raise
            print(f"reload after restart: {e}")
            time.sleep(2)
    wait_text(page, "#conv-list", "聊城市科普大篷车", 60000)
    page.locator("#conv-list label", has_text="青岛市科协组建").first.click()
    wait_text(page, "#chatbot", "374", 30000)
    page.wait_for_selector("#cite-1-1", timeout=30000)
