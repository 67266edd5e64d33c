"""A damaged index never answers silently (rag/index/store.check_generation, rag/search/retrieval).

One tiny index of two generations is built per module; each test damages a copy. Whatever the damage,
a search either still answers (from the previous intact generation, or from BM25 while the vectors are
made again) with a warning, or fails with a clear Chinese error naming the damage and the command that
rebuilds the index: never empty results without a word, never a traceback from the CLI. Then `kexie index`
repairs it. Also: a document deleted from corpus/ before a crash is not answered after the restart, and
the background vector filler survives generation switches and the deletion of its base."""

import os
import shutil
import subprocess
import sys

import pytest
from conftest import PROJECT_ROOT, copy_index

from rag.index import backfill, store
from rag.index.indexer import index_corpus
from rag.search.retrieval import IndexDamaged, Retriever, check_index, rebuild_command
from rag.settings import load_settings

DOCS = {
    "a.txt": "市科协召开全委会议。会议部署了全年科普工作，要求各学会加强自身建设。",
    "b.txt": "科普大篷车开进乡村学校。孩子们参观了机器人展品，体验了虚拟现实设备。",
    "d.txt": "学会服务站开展技术培训。农技专家讲解了果树栽培和病虫害防治。",  # three documents: BM25's idf is positive
}
NEW = "c.txt", "青少年科技创新大赛在体育馆举行。共有三百名学生参赛，评出一等奖二十项。"  # only in gen-000002
BUS, CONTEST = "科普大篷车", "青少年科技创新大赛"
GEN1, GEN2 = "gen-000001", "gen-000002"


@pytest.fixture(scope="module")
def base(tmp_path_factory, embedder):
    """Two committed generations with every vector stored: gen-000001 (a, b, d), gen-000002 (+ c.txt, in a
    segment of its own; the other segment is shared, hard-linked, with gen-000001)."""
    root = tmp_path_factory.mktemp("damage")
    corpus = root / "corpus"
    corpus.mkdir()
    for name, text in DOCS.items():
        (corpus / name).write_text(text, encoding="utf-8")
    s = load_settings(env={}, corpus_dir=corpus, index_dir=root / "index")
    index_corpus(s, embedder=embedder)
    (corpus / NEW[0]).write_text(NEW[1], encoding="utf-8")
    rep = index_corpus(s, embedder=embedder)
    assert rep.generation == GEN2 and backfill.current_state(s).complete
    assert check_all(s) == []
    return s


def check_all(s) -> list[store.Problem]:
    """check_generation of the current generation, the vector store included."""
    m = store.Manifest.read(s.index_dir)
    with backfill.Stores(s, store.kb_identity(s.index_dir)) as stores:
        return store.check_generation(s.index_dir, m.generation, open_store=stores.get)


def settings_of(root):
    return load_settings(env={}, corpus_dir=root / "corpus", index_dir=root / "index")


# -- the damage kinds -------------------------------------------------------------------------------

def _segments(s, gen):
    return store.read_segments(s.index_dir / gen)


def truncate_new_segment(s):
    """The segment only gen-000002 has (c.txt's rows): gen-000001 stays intact."""
    seg = _segments(s, GEN2)[-1]
    assert set(seg.sources) == {"c.txt"}
    os.truncate(s.index_dir / GEN2 / "seg" / f"{seg.id}.chunks.jsonl", 0)


def truncate_shared_segment(s):
    """The segment both generations hold: they are hard links to one file, so both lose it (the copy
    made for the test has two files: truncate both)."""
    seg = _segments(s, GEN2)[0]
    for gen in (GEN1, GEN2):
        os.truncate(s.index_dir / gen / "seg" / f"{seg.id}.chunks.jsonl", 0)


def truncate_new_bm25_segment(s):
    """BM25's segment of c.txt's rows (gen-000001 has the others): its arrays cut short."""
    old = {f.name for f in (s.index_dir / GEN1 / "bm25").iterdir()}
    new = [f for f in (s.index_dir / GEN2 / "bm25").glob("*.npy") if f.name not in old and f.name != "dead.npy"]
    assert new
    for f in new:
        os.truncate(f, f.stat().st_size // 2)


def truncate_chroma(size):
    def damage(s):
        p = s.chroma_dir / "chroma.sqlite3"
        os.truncate(p, int(p.stat().st_size * size))
    return damage


def truncate_manifest(s):
    p = s.index_dir / store.MANIFEST
    os.truncate(p, p.stat().st_size // 2)


def empty_manifest(s):
    (s.index_dir / store.MANIFEST).write_text("{}", encoding="utf-8")


def empty_manifest_without_copies(s):
    """An index written before generations kept a copy of their manifest: nothing to fall back to."""
    empty_manifest(s)
    for gen in (GEN1, GEN2):
        (s.index_dir / gen / store.GEN_MANIFEST).unlink()


def garbage_vectors(s):
    (s.index_dir / GEN2 / "vectors.json").write_text("garbage{", encoding="utf-8")


# kind, damage, outcome (fallback: an older generation answers; vectors: BM25 answers while the vectors
# are made again; error: IndexDamaged), the generation that answers, words the message must hold.
CASES = [
    ("segment_new", truncate_new_segment, "fallback", GEN1, ["chunks.jsonl", GEN2]),
    ("segment_shared", truncate_shared_segment, "error", None, ["chunks.jsonl", "0 字节"]),
    ("bm25_new_segment", truncate_new_bm25_segment, "fallback", GEN1, ["bm25", GEN2]),
    ("chroma_zero", truncate_chroma(0), "vectors", GEN2, ["向量库"]),
    ("chroma_half", truncate_chroma(0.5), "vectors", GEN2, ["向量库无法打开"]),
    ("manifest_truncated", truncate_manifest, "fallback", GEN2, ["manifest.json"]),
    ("manifest_empty", empty_manifest, "fallback", GEN2, ["manifest.json", "缺少字段"]),
    ("manifest_empty_no_copies", empty_manifest_without_copies, "error", None, ["manifest.json", "缺少字段"]),
    ("vectors_garbage", garbage_vectors, "vectors", GEN2, ["vectors.json"]),
]


def cli(s, *args, timeout=180):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for k in ("KEXIE_CORPUS_DIR", "KEXIE_INDEX_DIR", "KEXIE_FAULT"):
        env.pop(k, None)
    return subprocess.run([sys.executable, "-m", "rag.cli", *args, "--index", str(s.index_dir), "--corpus", str(s.corpus_dir)],
                          env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("kind,damage,outcome,serves,words", CASES, ids=[c[0] for c in CASES])
def test_damage_is_never_silent(base, embedder, tmp_path, kind, damage, outcome, serves, words):
    s = settings_of(copy_index(base, tmp_path))
    damage(s)
    r = Retriever(s, embedder)
    if outcome == "error":
        with pytest.raises(IndexDamaged) as e:
            r.search(BUS, 3)
        msg = str(e.value)
        assert rebuild_command(s) in msg and all(w in msg for w in words), msg
        with pytest.raises(IndexDamaged):
            check_index(s)  # app.py's start-up check: it prints this and exits 2
        assert r.health == msg
    else:
        hits = r.search(BUS, 3)
        assert hits and hits[0].chunk.source == "b.txt"  # answered, never silently empty
        assert r.snapshot().manifest.generation == serves
        if outcome == "fallback":
            assert "已损坏" in r.health and rebuild_command(s) in r.health and serves in r.health
            assert all(w in r.health for w in words), r.health
            if serves == GEN2:  # the manifest's copy in the generation: even the newest document answers
                assert r.search(CONTEST, 1, mode="bm25")[0].chunk.source == "c.txt"
        else:  # vectors: no silent null vector ranks; BM25 answers and the passages still get a vector score
            view = r.vector_view(r.snapshot())
            assert view.problem and len(view.missing) == len(r.snapshot().chunks)
            assert all(w in view.problem for w in words), view.problem
            assert "向量" in r.health and "BM25" in r.health
            assert all(h.vector_rank is None for h in hits) and hits[0].vector_score is not None
    r.close()

    # The CLI: the Chinese message and a non-zero exit, or the answer with a warning; never a traceback.
    out = cli(s, "search", BUS, "-k", "3")
    assert "Traceback" not in out.stderr, out.stderr
    if outcome == "error":
        assert out.returncode == 2 and "错误" in out.stderr and "kexie index --rebuild" in out.stderr
        # The web app's start-up: the same message and exit status, before anything is served.
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "KEXIE_INDEX_DIR": str(s.index_dir),
               "KEXIE_CORPUS_DIR": str(s.corpus_dir)}
        env.pop("KEXIE_CONFIG", None)
        app = subprocess.run([sys.executable, "app.py"], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True,
                             timeout=120)
        assert app.returncode == 2 and "Traceback" not in app.stderr and rebuild_command(s) in app.stderr, app.stderr
    else:
        assert out.returncode == 0 and "b.txt" in out.stdout
        assert "已损坏" in out.stderr or "向量索引不可用" in out.stderr, out.stderr

    # What the messages say to run repairs it: the vector side is planned again (the progress is no longer
    # complete) and filled; a damaged generation or manifest is rebuilt from the corpus.
    if outcome == "vectors":
        note = check_index(s)[1]  # app.py's start-up check
        assert note
        st = backfill.current_state(s)
        if kind.startswith("chroma"):
            assert not st.complete and st.total == 4
        backfill.fill(s, embedder=embedder)
    else:
        rep = index_corpus(s, embedder=embedder)
        assert "损坏" in rep.rebuilt
    assert backfill.current_state(s).complete
    assert check_all(s) == []
    r = Retriever(s, embedder)
    hits = r.search(BUS, 3)
    assert hits[0].chunk.source == "b.txt" and hits[0].vector_rank is not None
    assert r.search(CONTEST, 1)[0].chunk.source == "c.txt"
    assert r.health == ""
    r.close()


def test_the_rebuild_command_in_the_message_repairs(base, tmp_path):
    s = settings_of(copy_index(base, tmp_path))
    truncate_shared_segment(s)
    with pytest.raises(IndexDamaged) as e:
        Retriever(s).snapshot()
    cmd = rebuild_command(s)
    assert cmd in str(e.value)
    out = cli(s, "index", "--rebuild", "--wait", timeout=300)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    out = cli(s, "search", BUS, "-k", "1", "--mode", "bm25")
    assert out.returncode == 0 and "b.txt" in out.stdout and "损坏" not in out.stderr, out.stderr


def test_a_damaged_generation_committed_while_running_falls_back(base, embedder, tmp_path):
    """On a generation switch too: the retriever keeps answering from the intact one, with a warning."""
    s = settings_of(copy_index(base, tmp_path))
    r = Retriever(s, embedder)
    assert r.search(CONTEST, 1)[0].chunk.source == "c.txt" and r.health == ""
    (s.corpus_dir / "e.txt").write_text("科技志愿服务队走进社区，开展防震减灾科普宣传。", encoding="utf-8")
    rep = index_corpus(s, embedder=embedder)
    seg = _segments(s, rep.generation)[-1]
    os.truncate(s.index_dir / rep.generation / "seg" / f"{seg.id}.chunks.jsonl", 0)
    assert r.search(CONTEST, 1)[0].chunk.source == "c.txt"
    assert r.snapshot().manifest.generation == GEN2
    assert rep.generation in r.health and "已损坏" in r.health
    r.close()


def test_a_document_deleted_before_a_crash_is_not_answered_after_restart(base, embedder, tmp_path):
    s = settings_of(copy_index(base, tmp_path))
    (s.corpus_dir / "c.txt").unlink()  # deleted, then the process died before any re-index
    r = Retriever(s, embedder)
    for mode in ("hybrid", "bm25", "vector"):
        assert all(h.chunk.source != "c.txt" for h in r.search(CONTEST, 5, mode=mode)), mode
    assert "c.txt" not in r.snapshot().docs
    assert "c.txt" in r.health and "kexie index" in r.health
    assert r.search(BUS, 1)[0].chunk.source == "b.txt"  # the others answer as before
    r.close()
    rep = index_corpus(s, embedder=embedder)  # the next re-index drops it for good
    assert rep.removed == ["c.txt"]
    r = Retriever(s, embedder)
    assert r.health == "" and not r.snapshot().hidden
    r.close()


class Hooked:
    """The real encoder, running `hook` once before its first batch: the index changes during a fill."""

    def __init__(self, inner, hook):
        self.inner, self.hook, self.name, self.calls = inner, hook, inner.name, 0

    def embed_passages(self, texts):
        self.calls += 1
        if self.calls == 1:
            self.hook()
        return self.inner.embed_passages(texts)

    def embed_query(self, text):
        return self.inner.embed_query(text)


def _pending_base(tmp_path, n=6):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(n):
        (corpus / f"doc{i}.txt").write_text(f"第{i}号通知：科协组织第{i}批科技工作者开展调研。", encoding="utf-8")
    s = load_settings(env={}, corpus_dir=corpus, index_dir=tmp_path / "index", embedding_batch_size=1,
                      fast_embedding_model="")
    index_corpus(s, wait=False)  # searchable, every vector pending
    assert backfill.current_state(s).total == n
    return s


def test_the_filler_follows_generation_switches_during_a_batch(tmp_path, embedder):
    s = _pending_base(tmp_path)

    def two_commits():  # the filler's generation is replaced twice and removed while it embeds
        for name in ("x.txt", "y.txt"):
            (s.corpus_dir / name).write_text(f"{name} 新增：学会承接政府转移职能。", encoding="utf-8")
            index_corpus(s, wait=False)

    final = backfill.fill(s, embedder=Hooked(embedder, two_commits))
    assert not (s.index_dir / GEN1).exists()
    m = store.Manifest.read(s.index_dir)
    assert m.generation == "gen-000003" and final is not None and final.complete
    assert backfill.current_state(s).complete
    r = Retriever(s, embedder)
    assert not r.vector_view(r.snapshot()).missing and r.health == ""
    assert r.search("学会承接政府转移职能", 1, mode="vector")[0].chunk.source in {"x.txt", "y.txt"}
    r.close()


def test_the_filler_stops_when_its_base_is_deleted(tmp_path, embedder):
    s = _pending_base(tmp_path)
    final = backfill.fill(s, embedder=Hooked(embedder, lambda: shutil.rmtree(s.index_dir)))
    assert final is None and not s.index_dir.exists()
    # A thread started for a base that is gone does nothing either.
    assert backfill.start_thread(s, embedder) is None


def test_check_generation_reports_each_part(base, tmp_path):
    s = settings_of(copy_index(base, tmp_path))
    assert store.check_generation(s.index_dir, GEN2) == []
    truncate_new_segment(s)
    (s.index_dir / GEN2 / "bm25" / "dead.npy").unlink()
    garbage_vectors(s)
    parts = {p.part for p in store.check_generation(s.index_dir, GEN2)}
    assert parts == {"chunks", "bm25", "vectors"}
    assert store.check_generation(s.index_dir, GEN1) == []
    assert [p.part for p in store.check_generation(s.index_dir, "gen-000009")] == ["chunks"]
