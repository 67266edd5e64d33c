"""kill -9 at each stage of `kexie index`: the previous index stays usable, the next run finishes the job.

Before the commit (bm25, manifest) the previous generation answers as before; after it (gc, and the
vector phase: embed, chroma, vectors) the new generation is searchable by BM25 and its chunks without a
vector yet are never served from the vector store; the next run fills exactly what is missing."""

import os
import signal
import subprocess
import sys

import pytest
from conftest import PROJECT_ROOT

from rag.index import store
from rag.index.indexer import index_corpus, open_vectors
from rag.search.retrieval import Retriever
from rag.settings import load_settings

DOCS = {
    "a.txt": "市科协召开全委会议。会议部署了全年科普工作，要求各学会加强自身建设。",
    "b.txt": "科普大篷车开进乡村学校。孩子们参观了机器人展品，体验了虚拟现实设备。",
    "d.txt": "学会服务站开展技术培训。农技专家讲解了果树栽培和病虫害防治。",  # three documents: BM25's idf is positive
}
NEW = "c.txt", "青少年科技创新大赛在体育馆举行。共有三百名学生参赛，评出一等奖二十项。"


def run_index(s, fault: str | None) -> int:
    env = {**os.environ, "KEXIE_CORPUS_DIR": str(s.corpus_dir), "KEXIE_INDEX_DIR": str(s.index_dir), "HF_HUB_OFFLINE": "1"}
    env.pop("KEXIE_FAULT", None)
    if fault:
        env["KEXIE_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "rag.cli", "index", "--wait"], env=env, cwd=PROJECT_ROOT,
                          capture_output=True, timeout=300).returncode


def counts(s):
    m = store.Manifest.read(s.index_dir)
    chunks = store.read_chunks(s.index_dir / m.generation)
    return len(chunks), len({c.id for c in chunks}), open_vectors(s).count(), chunks


AFTER_COMMIT = {"gc", "embed", "chroma", "vectors"}


@pytest.mark.parametrize("fault", ["bm25", "manifest", "gc", "embed", "chroma", "vectors"])
def test_sigkill_during_index_keeps_previous_index(tmp_path, embedder, fault):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, text in DOCS.items():
        (corpus / name).write_text(text, encoding="utf-8")
    s = load_settings(env={}, corpus_dir=corpus, index_dir=tmp_path / "index")
    index_corpus(s, embedder=embedder)
    before_hits = Retriever(s, embedder).search("科普大篷车", 3)

    (corpus / NEW[0]).write_text(NEW[1], encoding="utf-8")
    (corpus / "a.txt").unlink()
    assert run_index(s, fault) == -signal.SIGKILL

    after = [h.chunk.id for h in Retriever(s, embedder).search("科普大篷车", 3)]
    if fault not in AFTER_COMMIT:
        # The previous generation still answers as before, except for a.txt: deleted from corpus/ before
        # the crash, it is hidden at load (reconciled with the corpus folder) until the next run drops it.
        assert after == [h.chunk.id for h in before_hits if h.chunk.source != "a.txt"]
        assert {c.source for c in counts(s)[3]} == {"a.txt", "b.txt", "d.txt"}
    else:  # the new generation is live: BM25 finds the new file at once
        assert {c.source for c in counts(s)[3]} == {"b.txt", "c.txt", "d.txt"}
        r = Retriever(s, embedder)
        assert r.search("青少年科技创新大赛", 1, mode="bm25")[0].chunk.source == "c.txt"
        snap = r.snapshot()
        view = r.vector_view(snap)
        if fault == "vectors":  # killed right after the batch and its state were committed
            assert not view.missing
        elif fault != "gc":  # killed before the new chunk's vector was committed: never served from Chroma
            new_rows = {i for i, c in enumerate(snap.chunks) if c.source == "c.txt"}
            assert new_rows <= view.missing
            assert not new_rows & {i for i, _ in r.vector_ranking(snap, "青少年科技创新大赛", 5)}
            # Fused fairly: BM25's best chunk is still first in hybrid mode although it has no vector.
            assert r.search("青少年科技创新大赛", 1)[0].chunk.source == "c.txt"

    # The next run completes: right counts, no duplicates, both stores agree.
    assert run_index(s, None) == 0
    n, unique, vectors, chunks = counts(s)
    assert {c.source for c in chunks} == {"b.txt", "c.txt", "d.txt"}
    assert n == unique == vectors
    assert Retriever(s, embedder).search("青少年科技创新大赛", 1)[0].chunk.source == "c.txt"
    assert not list((tmp_path / "index").glob("*.partial"))


def test_twenty_add_change_delete_cycles_match_a_fresh_rebuild(tmp_path, embedder):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    s = load_settings(env={}, corpus_dir=corpus, index_dir=tmp_path / "index")
    sentences = ["科协开展第{}次科普讲座。", "学会承接第{}项政府转移职能。", "志愿服务队开展第{}场活动。"]
    for i in range(20):
        op = i % 3
        name = f"doc{i % 5}.txt"
        if op == 0 or not (corpus / name).exists():
            (corpus / name).write_text("".join(t.format(i) for t in sentences), encoding="utf-8")
        elif op == 1:
            (corpus / name).write_text((corpus / name).read_text(encoding="utf-8") + f"补充说明{i}。", encoding="utf-8")
        else:
            (corpus / name).unlink()
        index_corpus(s, embedder=embedder)
    n, unique, vectors, chunks = counts(s)
    fresh = s.replace(index_dir=tmp_path / "fresh")
    index_corpus(fresh, embedder=embedder)
    n2, _, vectors2, chunks2 = counts(fresh)
    assert (n, vectors) == (n2, vectors2) and n == unique
    assert sorted(c.id for c in chunks) == sorted(c.id for c in chunks2)
