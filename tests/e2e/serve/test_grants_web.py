"""Knowledge bases with login on: a user sees only granted bases, in the page and by any URL (real Chromium)."""

from __future__ import annotations

import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import copy_index, free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SECRET_DOC = "财务管理细则.txt"


@pytest.fixture(scope="module")
def granted_app(corpus_index, embedder, tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium not installed (scripts/test-deps.sh installs it as root)")
    from rag.answer.assistant import Assistant
    from rag.index.indexer import index_corpus
    from rag.search.retrieval import Retriever
    from rag.serve.kbs import Registry
    from rag.serve.links import Signer
    from rag.serve.server import serve
    from rag.serve.web import build_app

    root = tmp_path_factory.mktemp("grants")
    copy_index(corpus_index, root)
    s = corpus_index.replace(corpus_dir=root / "corpus", index_dir=root / "index", data_dir=str(root / "data"),
                             port=free_port(), users={"alice": "alice-pw", "bob": "bob-pw"}, grants={"alice": ["默认知识库"]})
    registry = Registry(s, assistant=Assistant(s, Retriever(s, embedder)))
    finance = registry.create("财务库", "bob")  # bob's own base: alice has no grant
    (finance.corpus_dir / SECRET_DOC).write_text("财务管理细则\n\n第一条 差旅费报销须在出差结束后三十日内办理。\n", encoding="utf-8")
    index_corpus(registry.settings_for(finance), embedder=embedder)
    signer = Signer(s.data_root)
    running = serve(s, build_app(s, registry=registry, signer=signer), registry, signer, block=False)
    yield running.url, registry, signer, finance
    running.close()
    registry.close()


def login(browser, url, user, password):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.fill("input[type=text]", user)
    page.fill("input[type=password]", password)
    page.keyboard.press("Enter")
    page.wait_for_selector("#chatbot", timeout=60000)
    page.wait_for_function("() => { const e = document.querySelector('#who'); return !!e && e.innerText.includes('当前用户'); }",
                           timeout=30000)
    return page


def options(page, selector):
    page.locator(f"{selector} input").click()
    names = page.locator("ul[role=listbox] li").all_inner_texts()
    page.keyboard.press("Escape")
    return {n.strip().lstrip("✓").strip() for n in names}


def test_a_user_sees_only_granted_bases(granted_app):
    from playwright.sync_api import sync_playwright

    url, _, _, _ = granted_app
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        alice = login(browser, url, "alice", "alice-pw")
        assert options(alice, "#kb-pick") == {"默认知识库"}
        bob = login(browser, url, "bob", "bob-pw")
        assert options(bob, "#kb-pick") == {"财务库"}  # bob has no grant for the default base
        browser.close()


def test_no_url_reaches_another_bases_files(granted_app):
    url, registry, signer, finance = granted_app
    path = finance.corpus_dir / SECRET_DOC

    def status(u):
        try:
            return urllib.request.urlopen(url + u).status
        except urllib.error.HTTPError as e:
            return e.code

    src = urllib.parse.quote(SECRET_DOC)
    assert status(f"/files/{finance.id}/{src}?t={signer.token('bob', finance.id, SECRET_DOC)}") == 200
    assert status(f"/files/{finance.id}/{src}?t={signer.token('alice', finance.id, SECRET_DOC)}") == 403  # no grant
    assert status(f"/files/{finance.id}/{src}") == 403  # no token
    assert status(f"/files/{finance.id}/{src}?t=forged.token") == 403
    assert status(f"/gradio_api/file={urllib.parse.quote(str(path))}") in (401, 403)  # Gradio never serves the corpus
    # The page's own handlers refuse alice too (what a crafted call to the delete endpoint would reach).
    with pytest.raises(Exception, match="不存在或无权访问"):
        registry.get(finance.id, "alice")
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    def said(*args, api_name) -> str:
        """Every text the endpoint returned, joined (the confirmations return the box, its text and a message)."""
        got = client.predict(*args, api_name=api_name)
        return " ".join(x for x in (got if isinstance(got, (list, tuple)) else [got]) if isinstance(x, str))

    def refused(*args, api_name):
        try:
            return "无权访问" in said(*args, api_name=api_name)
        except AppError as e:  # Gradio itself refuses a base that is not among this user's choices
            return "not in the list of choices" in str(e)

    client = Client(url, auth=("alice", "alice-pw"), verbose=False, analytics_enabled=False, download_files=False)
    for base in ("财务库", finance.id):
        assert refused(base, SECRET_DOC, api_name="/ask_delete_doc")
        assert refused(base, api_name="/ask_delete_kb")
        assert refused(base, SECRET_DOC, api_name="/show_chunks")
    # The deletions take only what this session's confirmation named (server-side state), and check again.
    assert "删除失败" in said(api_name="/delete") and "删除失败" in said(api_name="/kb_delete")
    assert path.exists() and finance.corpus_dir.exists()
