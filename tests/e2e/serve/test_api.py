"""The HTTP API beside the page (rag/serve/api.py): the real app on a copy of the session index, the official
OpenAI client, and `kexie ask/search --json` as the reference; auth, limits and errors in-process."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT, copy_index, free_port, serve_bare

from rag.models import Answer
from rag.settings import load_settings

KEY = "test-key-0123456789"
QUESTION = "青岛市科协组建了多少支科技志愿服务队"
QINGDAO = "青岛市科协_奋力谱写新时代发展新篇章.txt"


def quiet_env(**extra: str) -> dict[str, str]:
    """None of the developer's KEXIE_* settings, no telemetry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEXIE_")}
    env.update(GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", DO_NOT_TRACK="1", **extra)
    return env


@pytest.fixture(scope="module")
def app(corpus_index, tmp_path_factory):
    """`python app.py` with API keys, on a copy of the session index (nothing re-embedded)."""
    root = tmp_path_factory.mktemp("api")
    copy_index(corpus_index, root)
    port = free_port()
    # The API must print exactly what `kexie search/ask --json` prints. The reranker reads the fused top 20,
    # and that deep the app process (vectors backfilled meanwhile) and a fresh CLI process were seen to
    # differ, so both compare the fused ranking; reranked answers are covered by test_answer and test_web.
    data = {"KEXIE_CORPUS_DIR": str(root / "corpus"), "KEXIE_INDEX_DIR": str(root / "index"),
            "KEXIE_DATA_DIR": str(root / "data"), "KEXIE_RERANK": "false"}
    env = quiet_env(**data, KEXIE_PORT=str(port), KEXIE_HOST="127.0.0.1", KEXIE_API_KEYS=f"{KEY},other-key-xyz",
                    KEXIE_API_RATE_LIMIT="1000")
    log = root / "app.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, str(PROJECT_ROOT / "app.py")], env=env, cwd=root, stdout=fh,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(url + "/", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail("app did not start: " + log.read_text())
            time.sleep(0.3)
    yield {"url": url, "root": root, "env": quiet_env(**data), "log": log}
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("app did not stop within 20 s of SIGTERM")
    assert "Traceback" not in log.read_text(encoding="utf-8", errors="replace"), log.read_text()[-3000:]


def call(url: str, path: str, body=None, key: str | None = KEY, method: str | None = None, raw: bytes | None = None):
    """(status, parsed JSON or bytes, headers)."""
    data = raw if raw is not None else None if body is None else json.dumps(body, ensure_ascii=False).encode()
    req = urllib.request.Request(url + path, data=data, method=method or ("POST" if data is not None else "GET"))
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            status, payload, headers = r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        status, payload, headers = e.code, e.read(), e.headers
    if headers.get("content-type", "").startswith("application/json"):
        return status, json.loads(payload), headers
    return status, payload, headers


def assert_error(resp, status: int, code: str | None = None):
    got, body, _ = resp
    assert got == status, body
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert re.search(r"[\u4e00-\u9fff]", err["message"]) and "Traceback" not in err["message"], err
    assert err["type"]
    if code:
        assert err["code"] == code, err
    return err


def markers_cited(text: str, citations: list[dict]) -> None:
    marks = {int(n) for n in re.findall(r"\[(\d+)\]", text)}
    assert marks, text
    assert marks <= {c["n"] for c in citations}, (text, citations)


def cli_json(env: dict, cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rag.cli", *args, "--json"], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# -- the real app ----------------------------------------------------------------------------
def test_page_still_loads(app):
    with urllib.request.urlopen(app["url"] + "/", timeout=30) as r:
        assert r.status == 200 and "科协问答" in r.read().decode("utf-8")


def test_openai_client_streams_answer_with_citations(app):
    from openai import OpenAI

    client = OpenAI(base_url=app["url"] + "/v1", api_key=KEY, max_retries=0)
    text, chunks = "", []
    for chunk in client.chat.completions.create(model="kexie", messages=[{"role": "user", "content": QUESTION}],
                                                stream=True):
        chunks.append(chunk)
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
    last = chunks[-1]
    extra = last.model_extra or {}
    assert last.choices[0].finish_reason == "stop"
    assert all(c.object == "chat.completion.chunk" and c.id == last.id for c in chunks)
    assert "374" in text and re.search(r"\[\d+\]", text), text
    assert extra["refused"] is False and extra["answer"] == text
    markers_cited(text, extra["citations"])
    assert QINGDAO in [c["source"] for c in extra["citations"]]
    assert all(c.model_extra.get("citations") is None for c in chunks[:-1])  # only the last chunk carries them


def test_non_stream_and_ask_equal_kexie_ask_json(app):
    from openai import OpenAI

    cli = cli_json(app["env"], app["root"], "ask", QUESTION)  # loads its own model meanwhile
    client = OpenAI(base_url=app["url"] + "/v1", api_key=KEY, max_retries=0)
    resp = client.chat.completions.create(model="default", messages=[{"role": "user", "content": QUESTION}])
    status, api, _ = call(app["url"], "/api/ask", {"question": QUESTION})
    out, err = cli.communicate(timeout=120)
    assert cli.returncode == 0, err
    want = json.loads(out)
    assert status == 200 and api == want
    content, extra = resp.choices[0].message.content, resp.model_extra
    assert resp.object == "chat.completion" and resp.choices[0].finish_reason == "stop"
    assert content == want["answer"] and extra["citations"] == want["citations"] and extra["refused"] is False
    markers_cited(content, extra["citations"])


def test_refusal_returns_the_closest_passages_it_announces_and_usage(app):
    from openai import OpenAI

    from rag.lang.text import estimate_tokens

    client = OpenAI(base_url=app["url"] + "/v1", api_key=KEY, max_retries=0)
    question = "火星探测器的推进剂配方是什么"
    resp = client.chat.completions.create(model="kexie", messages=[{"role": "user", "content": question}])
    extra = resp.model_extra
    assert extra["refused"] is True and "以下是最接近的段落" in resp.choices[0].message.content
    cites = extra["citations"]
    assert 1 <= len(cites) <= 3 and all(c["supporting"] is False and c["text"] and c["source"] for c in cites)
    assert [c["n"] for c in cites] == list(range(1, len(cites) + 1))
    u = resp.usage
    assert u.prompt_tokens == estimate_tokens(question) and u.completion_tokens == estimate_tokens(resp.choices[0].message.content)
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    # an answer keeps its real citations, none flagged
    ok = client.chat.completions.create(model="kexie", messages=[{"role": "user", "content": QUESTION}])
    assert ok.model_extra["refused"] is False and all("supporting" not in c for c in ok.model_extra["citations"])
    assert ok.usage.completion_tokens > 0


def test_search_equals_kexie_search_json(app):
    cli = cli_json(app["env"], app["root"], "search", "什么是四服务一加强", "-k", "4")
    status, api, _ = call(app["url"], "/api/search", {"query": "什么是四服务一加强", "k": 4})
    out, err = cli.communicate(timeout=120)
    assert cli.returncode == 0, err
    assert status == 200 and len(api) == 4 and api == json.loads(out)


def test_history_makes_a_follow_up(app):
    first = call(app["url"], "/api/ask", {"question": QUESTION})[1]
    history = [[QUESTION, first["answer"]]]
    asked = call(app["url"], "/api/ask", {"question": "那济宁市呢？", "history": history})[1]
    alone = call(app["url"], "/api/ask", {"question": "那济宁市呢？"})[1]
    messages = [{"role": "system", "content": "忽略"}, {"role": "user", "content": QUESTION},
                {"role": "assistant", "content": first["answer"]}, {"role": "user", "content": "那济宁市呢？"}]
    status, chat, _ = call(app["url"], "/v1/chat/completions", {"model": "kexie", "messages": messages})
    assert status == 200
    assert chat["choices"][0]["message"]["content"] == asked["answer"] and chat["citations"] == asked["citations"]
    assert asked != alone  # the history reached the assistant
    assert any("济宁" in h["source"] for h in asked["retrieved"][:3]), asked["retrieved"][:3]


def test_models_lists_the_default_base(app):
    from openai import OpenAI

    models = OpenAI(base_url=app["url"] + "/v1", api_key=KEY, max_retries=0).models.list()
    ids = [m.id for m in models.data]
    assert "default" in ids
    body = call(app["url"], "/v1/models")[1]
    assert body["object"] == "list" and body["data"][0] == {"id": "default", "object": "model", "created": 0,
                                                              "owned_by": "kexie", "name": "默认知识库"}


def test_keys_are_required(app):
    from openai import AuthenticationError, OpenAI

    for key in (None, "wrong-key", KEY + "x"):
        err = assert_error(call(app["url"], "/v1/models", key=key), 401, "invalid_api_key")
        assert "API Key" in err["message"]
        assert_error(call(app["url"], "/api/ask", {"question": QUESTION}, key=key), 401)
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=app["url"] + "/v1", api_key="wrong-key", max_retries=0).models.list()
    assert call(app["url"], "/v1/models", key="other-key-xyz")[0] == 200  # every configured key works


def test_bad_requests_are_json(app):
    url = app["url"]
    assert_error(call(url, "/v1/chat/completions", raw=b"{not json"), 400, "invalid_body")
    assert_error(call(url, "/v1/chat/completions", {"messages": []}), 400)
    assert_error(call(url, "/v1/chat/completions", {"model": "kexie"}), 400)
    assert_error(call(url, "/v1/chat/completions", {"messages": [{"role": "assistant", "content": "x"}]}), 400)
    assert_error(call(url, "/api/ask", {"question": "   "}), 400, "empty_question")
    assert_error(call(url, "/api/search", {"query": "科协", "k": 0}), 400)
    assert_error(call(url, "/api/ask", {"question": QUESTION, "history": [["only a question"]]}), 400)
    assert_error(call(url, "/api/ask", raw=b"[1, 2]"), 400)
    assert_error(call(url, "/v1/chat/completions", method="GET"), 405)
    assert_error(call(url, "/v1/no-such-thing"), 404)


def test_unknown_knowledge_base_is_404(app):
    from openai import NotFoundError, OpenAI

    url = app["url"]
    assert_error(call(url, "/api/ask", {"question": QUESTION, "kb": "没有这个库"}), 404, "kb_not_found")
    assert_error(call(url, "/api/search", {"query": "科协", "kb": "nope"}), 404, "kb_not_found")
    msgs = [{"role": "user", "content": QUESTION}]
    assert_error(call(url, "/v1/chat/completions", {"model": "nope", "messages": msgs}), 404, "model_not_found")
    with pytest.raises(NotFoundError):
        OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0).chat.completions.create(model="nope", messages=msgs)
    # The base's name works as well as its id.
    status, body, _ = call(url, "/api/search", {"query": "科协", "k": 1, "kb": "默认知识库"})
    assert status == 200 and len(body) == 1


def raw_get(url: str, path: str) -> tuple[int, bytes]:
    """GET with the path exactly as given (urllib would not, but a client may send ../ as is)."""
    host, port = url.removeprefix("http://").split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=30)
    c.request("GET", path)
    r = c.getresponse()
    return r.status, r.read()


def test_files_need_a_valid_signed_link(app):
    from rag.serve.links import Signer

    signer = Signer(app["root"] / "data")  # the app's key file
    url, src = app["url"], QINGDAO
    status, body = raw_get(url, signer.url(None, "default", src))
    assert status == 200 and body == (app["root"] / "corpus" / src).read_bytes()
    token = signer.token(None, "default", src)
    for path in (f"/files/default/{src}", f"/files/default/{src}?t=", f"/files/default/{src}?t=forged.token",
                 f"/files/default/{src}?t={token[:-2]}xx",  # altered signature
                 f"/files/default/{src}?t={Signer(app['root'] / 'other-key').token(None, 'default', src)}",
                 f"/files/other/{src}?t={token}",  # a link for another base
                 "/files/default/济宁市科协_强化使命担当服务创新发展综述.txt?t=" + token):  # for another file
        status, body = raw_get(url, urllib.parse.quote(path, safe="/?=&"))
        assert status == 403 and "error" in json.loads(body), path
    for bad in ("../index/manifest.json", "../app.log", "/etc/passwd"):  # signed, but outside the corpus
        status, body = raw_get(url, signer.url(None, "default", bad))
        assert status in (403, 404) and "error" in json.loads(body) and b"generation" not in body, bad
    status, body = raw_get(url, "/files/default/..%2Findex%2Fmanifest.json?t="
                                + signer.token(None, "default", "../index/manifest.json"))
    assert status == 403, body
    # Gradio no longer serves corpus files by path.
    status, _ = raw_get(url, urllib.parse.quote(f"/gradio_api/file={app['root'] / 'corpus' / src}", safe="/=?"))
    assert status in (403, 404)


def test_viewer_shows_the_cited_passage_in_its_document(app):
    """The viewer takes the download link's token; the cited passage is shaded, its sentence marked and
    anchored; errors are Chinese pages; the page runs no script."""
    from rag.serve.links import Signer
    from rag.serve.viewer import view_link

    signer = Signer(app["root"] / "data")
    url, src = app["url"], QINGDAO
    status, found, _ = call(url, "/api/search", {"query": QUESTION, "k": 3})
    hit = next(h for h in found if h["source"] == src)
    sentence = next(s for s in re.split(r"(?<=。)", hit["text"]) if "志愿服务" in s)
    a = hit["text"].index(sentence)
    link = view_link(signer.url(None, "default", src), hit["text"], [(a, a + len(sentence))])
    host, port = url.removeprefix("http://").split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=60)
    assert link.endswith("#hit")  # the browser scrolls to the passage
    c.request("GET", link.removesuffix("#hit"))
    r = c.getresponse()
    body = r.read().decode("utf-8")
    assert r.status == 200 and r.getheader("content-type").startswith("text/html")
    assert "script-src" not in r.getheader("content-security-policy") and "default-src 'none'" in r.getheader("content-security-policy")
    assert "<script" not in body
    assert f"<mark>{sentence}</mark>" in body.replace("<span class='passage'>", "").replace("</span>", "")
    assert body.index("id='hit'") < body.index(sentence)
    whole = (app["root"] / "corpus" / src).read_text(encoding="utf-8")
    first = next(line for line in whole.splitlines() if len(line) > 20)[:20]
    assert first in body  # the whole document, not only the passage
    # Forged token, and another file's link: a Chinese page, not JSON.
    link = link.removesuffix("#hit")
    for bad in (link.replace("?t=", "?t=x"), link.replace(urllib.parse.quote(src), urllib.parse.quote("济宁市科协_强化使命担当服务创新发展综述.txt"))):
        status, raw = raw_get(url, bad)
        assert status == 403 and "无法打开原文" in raw.decode("utf-8"), bad


def test_deleted_file_gets_a_chinese_page(app):
    from rag.serve.links import Signer

    signer = Signer(app["root"] / "data")
    src = "不存在的文件.txt"
    status, raw = raw_get(app["url"], signer.url(None, "default", src).replace("/files/", "/view/"))
    assert status == 404 and "已被删除或移动" in raw.decode("utf-8")
    host, port = app["url"].removeprefix("http://").split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=30)
    c.request("GET", signer.url(None, "default", src), headers={"Accept": "text/html"})
    r = c.getresponse()
    assert r.status == 404 and "已被删除或移动" in r.read().decode("utf-8")  # the download link opened in a browser


# -- in-process: open/closed without keys, the rate limit, internal errors ---------------------
def api_client(tmp_path, **over):
    from fastapi.testclient import TestClient

    from rag.serve.api import build_api
    from rag.serve.kbs import Registry
    from rag.serve.links import Signer

    (tmp_path / "corpus").mkdir(exist_ok=True)
    s = load_settings(env={}, corpus_dir=tmp_path / "corpus", index_dir=tmp_path / "index", **over)
    registry = Registry(s)
    # A caller on this machine, as a browser or curl on the same host would be.
    return TestClient(build_api(s, registry, Signer(s.data_root)), raise_server_exceptions=False,
                      base_url="http://127.0.0.1:7860", client=("127.0.0.1", 50000)), registry


@pytest.mark.slow
def test_without_keys_open_on_loopback_only(tmp_path):
    client, _ = api_client(tmp_path, host="127.0.0.1")
    assert client.get("/v1/models").status_code == 200
    # Open means "this machine, directly": not through a reverse proxy, not by a rebound DNS name.
    assert client.get("/v1/models", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 401
    assert client.get("/v1/models", headers={"Host": "evil.example:7860"}).status_code == 401
    # With page logins the API never opens without keys (it would bypass the grants).
    client, _ = api_client(tmp_path, host="127.0.0.1", auth_user="admin", auth_password="pw")
    assert client.get("/v1/models").status_code == 401
    client, _ = api_client(tmp_path, host="0.0.0.0")
    r = client.get("/v1/models", headers={"Authorization": "Bearer anything"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "api_keys_not_configured"
    assert "api_keys" in r.json()["error"]["message"] and "KEXIE_API_KEYS" in r.json()["error"]["message"]
    client, _ = api_client(tmp_path, host="0.0.0.0", api_keys=("k-123456",))
    assert client.get("/v1/models", headers={"Authorization": "Bearer k-123456"}).status_code == 200


def test_rate_limit_per_key(tmp_path):
    client, _ = api_client(tmp_path, host="0.0.0.0", api_keys=("key-a", "key-b"), api_rate_limit=5)
    a, b = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}
    assert [client.get("/v1/models", headers=a).status_code for _ in range(5)] == [200] * 5
    r = client.get("/v1/models", headers=a)
    assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(r.headers["retry-after"]) <= 60 and "每分钟最多 5 次" in r.json()["error"]["message"]
    assert client.get("/v1/models", headers=b).status_code == 200  # another key has its own budget


def test_rate_limiter_window_slides():
    from rag.serve.api import RateLimiter

    now = [0.0]
    lim = RateLimiter(3, 60.0, clock=lambda: now[0])
    assert [lim.hit("k") for _ in range(3)] == [0.0] * 3
    assert lim.hit("k") == pytest.approx(60.0)
    now[0] = 30.0
    assert lim.hit("k") == pytest.approx(30.0) and lim.hit("other") == 0.0
    now[0] = 60.5  # the first three have left the window
    assert [lim.hit("k") for _ in range(3)] == [0.0] * 3 and lim.hit("k") > 0
    assert RateLimiter(0).hit("k") == 0.0  # 0: no limit


class Exploding:
    """An assistant that fails, with a secret in the exception text."""

    def __init__(self, after_first: bool):
        self.after_first = after_first

    def ask_stream(self, question, history=None, *a, **kw):
        if self.after_first:
            yield Answer(question, "草稿[1]", False, [], [])
        raise RuntimeError("secret-detail /srv/private")

    def ask(self, question, history=None, *a, **kw):
        return list(self.ask_stream(question, history))[-1]


def test_internal_errors_say_only_the_type(tmp_path):
    client, registry = api_client(tmp_path, host="127.0.0.1")
    registry.assistant = lambda kb: Exploding(after_first=False)
    msgs = {"messages": [{"role": "user", "content": "问题"}]}
    for r in (client.post("/api/ask", json={"question": "问题"}), client.post("/v1/chat/completions", json=msgs),
              client.post("/v1/chat/completions", json={**msgs, "stream": True})):
        assert r.status_code == 500, r.text
        assert r.json()["error"]["message"].startswith("服务器内部错误（RuntimeError）")
        assert "secret" not in r.text and "Traceback" not in r.text
    registry.assistant = lambda kb: Exploding(after_first=True)  # fails once the stream has begun
    r = client.post("/v1/chat/completions", json={**msgs, "stream": True})
    events = [line[5:].strip() for line in r.text.splitlines() if line.startswith("data:")]
    assert r.status_code == 200 and events[-1] == "[DONE]"
    assert "RuntimeError" in json.loads(events[-2])["error"]["message"] and "secret" not in r.text


def test_serve_in_a_thread_with_login_on(tmp_path):
    """server.serve(block=False): page login (Gradio's) and API keys (ours) side by side on one port."""
    s, running = serve_bare(tmp_path, auth_user="staff", auth_password="pa55-word", api_keys=("k-0123456789",))
    try:
        assert running.url == f"http://127.0.0.1:{s.port}"
        assert call(running.url, "/config", key=None)[0] == 401  # the page wants its login
        status, body, _ = call(running.url, "/v1/models", key="k-0123456789")
        assert status == 200 and body["data"][0]["id"] == "default"
        assert_error(call(running.url, "/v1/models", key="pa55-word"), 401)  # a page password is no API key
    finally:
        running.close()
    assert not running.thread.is_alive()
    with pytest.raises(OSError):
        urllib.request.urlopen(running.url + "/", timeout=2)
