"""Incremental BM25: any sequence of updates scores exactly like a rebuild over the same live documents."""

import os
import random

import numpy as np
import pytest

from rag.index import bm25 as bm25_mod
from rag.index.bm25 import BM25Index


def random_docs(rnd, vocab, n, max_len=25):
    # Empty documents included: they are indexed as [""] (length 1), which moves avgdl.
    return [rnd.choices(vocab, k=rnd.randint(0, max_len)) for _ in range(n)]


def apply(live, remove, add):
    gone = set(remove)
    return [d for i, d in enumerate(live) if i not in gone] + add


def assert_same_scores(idx, live, queries):
    ref = BM25Index.build(live)
    assert idx.size == ref.size == len(live)
    for q in queries:
        assert np.array_equal(idx.scores(q), ref.scores(q)), q
        assert idx.search(q, 7) == ref.search(q, 7), q


def test_random_update_sequences_equal_a_rebuild():
    for seed in range(12):
        rnd = random.Random(seed)
        vocab = [f"词{i}" for i in range(rnd.randint(3, 60))]
        live = random_docs(rnd, vocab, rnd.randint(0, 80))
        idx = BM25Index.build(live)
        queries = [rnd.sample(vocab, min(len(vocab), rnd.randint(1, 5))) for _ in range(6)] + [vocab[:1] * 3]
        for step in range(40):
            r = rnd.random()
            if r < 0.05:
                remove = list(range(len(live)))  # everything
            else:
                remove = rnd.sample(range(len(live)), rnd.randint(0, min(len(live), 12)))
            add = random_docs(rnd, vocab, rnd.randint(0, 12)) if r > 0.1 else []
            rnd.shuffle(remove)  # order and duplicates of `remove` do not matter
            idx = idx.update(remove + remove[:2], add)
            live = apply(live, remove, add)
            assert_same_scores(idx, live, queries)
            assert len(idx._segments) <= bm25_mod.MAX_SEGMENTS
            for t in vocab[:5] + ["", "没有"]:
                assert idx.doc_freq(t) == sum(t in (d or [""]) for d in live), (seed, step, t)


def test_terms_only_in_removed_documents_vanish():
    idx = BM25Index.build([["甲", "乙"], ["乙", "丙"], ["丁"]])
    new = idx.update([0], [])
    assert new.doc_freq("甲") == 0 and new.search(["甲"], 5) == []
    assert new.doc_freq("乙") == 1 and idx.doc_freq("乙") == 2
    emptied = new.update(range(new.size), [])
    assert emptied.size == 0 and emptied.scores(["乙"]).shape == (0,) and emptied.search(["乙"], 3) == []
    again = emptied.update([], [[], ["乙"]])
    assert_same_scores(again, [[], ["乙"]], [["乙"], [""]])


def test_df_crossing_half_the_corpus_changes_idf_to_zero_and_back():
    # "常" is in 2 of 4 documents: idf log(max(1, 2.5/2.5)) = 0; remove one holder and it scores again.
    live = [["常", "稀"], ["常"], ["甲"], ["乙"]]
    idx = BM25Index.build(live)
    assert not idx.scores(["常"]).any()
    idx2 = idx.update([1], [])
    assert idx2.scores(["常"])[0] > 0
    assert_same_scores(idx2, apply(live, [1], []), [["常"], ["常", "稀"]])
    idx3 = idx2.update([], [["常"], ["常"]])  # 3 of 5 holders: idf 0 again
    assert not idx3.scores(["常"]).any()
    assert_same_scores(idx3, apply(live, [1], [["常"], ["常"]]), [["常"], ["稀", "常"]])


def test_old_index_is_unchanged_by_update():
    rnd = random.Random(3)
    vocab = [f"w{i}" for i in range(30)]
    docs = random_docs(rnd, vocab, 60)
    idx = BM25Index.build(docs)
    before = [idx.scores([w]) for w in vocab]
    for _ in range(20):  # enough updates to trigger merges and compactions of shared segments
        new = idx.update(rnd.sample(range(idx.size), 5), random_docs(rnd, vocab, 5))
    assert idx.size == 60 and new.size == 60
    assert all(np.array_equal(b, idx.scores([w])) for b, w in zip(before, vocab))


def test_merge_policy_keeps_scores_and_bounds_segments_and_dead_rows(monkeypatch):
    monkeypatch.setattr(bm25_mod, "MAX_SEGMENTS", 3)
    rnd = random.Random(4)
    vocab = [f"w{i}" for i in range(40)]
    live = random_docs(rnd, vocab, 50)
    idx = BM25Index.build(live)
    base = idx._segments[0]
    queries = [rnd.sample(vocab, 3) for _ in range(8)]
    for _ in range(30):
        remove = rnd.sample(range(len(live)), 4)
        add = random_docs(rnd, vocab, 4)
        idx, live = idx.update(remove, add), apply(live, remove, add)
        assert len(idx._segments) <= 3
        for s, a in zip(idx._segments, idx._alive):
            assert a is None or (~a).sum() <= bm25_mod.MAX_DEAD * s.n
        assert_same_scores(idx, live, queries)
    assert base not in idx._segments  # the first segment was compacted or merged away


def test_scores_equal_bm25s_public_get_scores_after_updates():
    import bm25s

    rnd = random.Random(5)
    vocab = [f"w{i}" for i in range(200)]
    live = random_docs(rnd, vocab, 300, max_len=60)
    idx = BM25Index.build(live)
    for _ in range(5):
        remove = rnd.sample(range(len(live)), 20)
        add = random_docs(rnd, vocab, 20, max_len=60)
        idx, live = idx.update(remove, add), apply(live, remove, add)
    ref = bm25s.BM25(k1=1.5, b=0.75, method="atire", idf_method="robertson")
    ref.index([d if d else [""] for d in live], show_progress=False)
    for _ in range(30):
        q = rnd.sample(vocab, rnd.randint(1, 8))
        np.testing.assert_allclose(idx.scores(q), ref.get_scores(q), rtol=1e-6, atol=1e-6)


def test_save_links_unchanged_segments_and_load_reuses_them(tmp_path):
    rnd = random.Random(6)
    vocab = [f"词{i}" for i in range(50)] + [""]
    docs = random_docs(rnd, vocab, 100)
    v1 = BM25Index.build(docs)
    v1.save(tmp_path / "g1")
    v2 = v1.update(range(10, 20), random_docs(rnd, vocab, 10))
    v2.save(tmp_path / "g2", previous=tmp_path / "g1")
    old_seg, new_seg = v2._segments
    for f in old_seg.files():
        assert os.stat(tmp_path / "g1" / f).st_ino == os.stat(tmp_path / "g2" / f).st_ino
    assert all(os.stat(tmp_path / "g2" / f).st_nlink == 1 for f in new_seg.files())

    r1 = BM25Index.load(tmp_path / "g1")
    r2 = BM25Index.load(tmp_path / "g2", reuse=r1)
    assert r2._segments[0] is r1._segments[0] and r2._segments[1] is not new_seg
    cold = BM25Index.load(tmp_path / "g2")
    for q in (["词1", "词2"], ["词3"], ["没有"]):
        assert np.array_equal(r2.scores(q), v2.scores(q)) and np.array_equal(cold.scores(q), v2.scores(q))
        assert np.array_equal(r1.scores(q), v1.scores(q))
    assert r2.size == 100 and r2.doc_freq("词1") == v2.doc_freq("词1")

    empty = v2.update(range(v2.size), [])
    empty.save(tmp_path / "g3", previous=tmp_path / "g2")
    assert BM25Index.load(tmp_path / "g3", reuse=r2).size == 0


def test_search_breaks_ties_by_row_and_rejects_bad_rows():
    idx = BM25Index.build([["甲"], ["乙"], ["甲"], ["丙"], ["甲"]] + [["戊"]] * 5).update([1], [["甲"]])
    assert [r for r, _ in idx.search(["甲"], 10)] == [0, 1, 3, 9]
    assert [r for r, _ in idx.search(["甲"], 2)] == [0, 1]
    many = BM25Index.build([["甲"] if i % 3 else ["乙", "甲"] for i in range(3000)] + [["丙"]] * 4000)
    assert [r for r, _ in many.search(["甲"], 500)] == [i for i in range(3000) if i % 3][:500]
    with pytest.raises(IndexError):
        idx.update([idx.size], [])
    with pytest.raises(IndexError):
        idx.update([-1], [])
