"""Server mode: a real `chroma run` on 127.0.0.1, reached through chromadb.HttpClient."""

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port

from rag.index import store
from rag.index.indexer import index_corpus
from rag.index.vectors import collection_name
from rag.search.retrieval import Retriever
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


def _server_settings(tmp_path, name, port, files):
    corpus = tmp_path / name / "corpus"
    corpus.mkdir(parents=True)
    for fname, text in files.items():
        (corpus / fname).write_text(text, encoding="utf-8")
    return load_settings(env={}, corpus_dir=corpus, index_dir=tmp_path / name / "index", chroma_host="127.0.0.1",
                         chroma_port=port)


def _collection(port, s):
    import chromadb

    m = store.Manifest.read(s.index_dir)
    return chromadb.HttpClient(host="127.0.0.1", port=port).get_collection(collection_name(m.model, m.kb_id))


def test_index_and_search_through_chroma_server(tmp_path, chroma_server, embedder):
    s = _server_settings(tmp_path, "kb", chroma_server, {
        "名词解释.txt": "名词解释\n\n1. “四服务一加强”：服务科技工作者、服务创新驱动发展战略、服务公民科学素质提高、服务党委政府科学决策，加强自身建设；\n\n"
                     "2. “三型”组织：开放型、枢纽型、平台型科协组织。",
        "活动.txt": "科普大篷车开进乡村学校。孩子们体验了虚拟现实设备。"})
    rep = index_corpus(s, embedder=embedder)
    assert rep.embedded == rep.chunks >= 2
    assert not (s.index_dir / "chroma").exists()  # vectors live in the server, not on local disk
    assert _collection(chroma_server, s).count() == rep.chunks
    hits = Retriever(s, embedder).search("什么是四服务一加强", 3, "vector")
    assert hits and all(h.vector_rank for h in hits)
    assert any("四服务一加强" in h.chunk.text for h in hits)
    again = index_corpus(s, embedder=embedder)
    assert again.changes == 0 and again.embedded == 0


def test_two_bases_on_one_server_keep_their_own_vectors(tmp_path, chroma_server, embedder):
    """Indexing, re-indexing and rebuilding in turns: each base keeps exactly its own vectors and results."""
    a = _server_settings(tmp_path, "a", chroma_server, {
        "青岛.txt": "青岛市科协组建了科技志愿服务队。志愿者深入社区开展科普讲座。",
        "共同.txt": "全国科技工作者日各地科协开展了座谈活动。"})
    b = _server_settings(tmp_path, "b", chroma_server, {
        "天津.txt": "天津市科协建设了院士专家工作站。工作站服务中小企业技术创新。",
        "共同.txt": "全国科技工作者日各地科协开展了座谈活动。"})  # the same text in both bases: the same chunk id

    def check():
        for s, own, other in ((a, "青岛", "天津"), (b, "天津", "青岛")):
            chunks = store.read_chunks(s.index_dir / store.Manifest.read(s.index_dir).generation)
            assert _collection(chroma_server, s).count() == len({c.id for c in chunks})
            hits = Retriever(s, embedder).search(f"{own}市科协", 5, "vector")
            sources = {h.chunk.source for h in hits}
            assert f"{own}.txt" in sources and f"{other}.txt" not in sources

    index_corpus(a, embedder=embedder)
    index_corpus(b, embedder=embedder)
    assert store.kb_identity(a.index_dir) != store.kb_identity(b.index_dir)
    check()
    (a.corpus_dir / "共同.txt").unlink()  # a's garbage collection must not delete b's copy of the shared chunk
    (a.corpus_dir / "新增.txt").write_text("青岛市科协举办了青少年科技创新大赛。", encoding="utf-8")
    index_corpus(a, embedder=embedder)
    check()
    index_corpus(b, rebuild=True, embedder=embedder)  # a rebuild drops only b's own old collections
    check()
    index_corpus(a, rebuild=True, embedder=embedder)
    check()
