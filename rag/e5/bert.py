"""e5-small's BERT for inference, in plain PyTorch: the parameter names and outputs of transformers'
`BertModel(add_pooling_layer=False)` in eval mode (a test holds the two equal), without importing transformers,
which took ~4 s of every process that loads the reading model. Training keeps `rag.e5.model.encoder`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import nn
from torch.nn import functional as F

from rag.e5.file import E5File


@dataclass(frozen=True)
class Shape:
    hidden: int
    heads: int
    ffn: int
    layers: int
    positions: int
    types: int
    eps: float


class Attention(nn.Module):
    def __init__(self, s: Shape):
        super().__init__()
        self.heads = s.heads
        self.self = nn.Module()
        for name in ("query", "key", "value"):
            setattr(self.self, name, nn.Linear(s.hidden, s.hidden))
        self.output = nn.Module()
        self.output.dense = nn.Linear(s.hidden, s.hidden)
        self.output.LayerNorm = nn.LayerNorm(s.hidden, eps=s.eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape

        def split(lin: nn.Linear) -> torch.Tensor:
            return lin(x).view(b, t, self.heads, h // self.heads).transpose(1, 2)

        a = F.scaled_dot_product_attention(split(self.self.query), split(self.self.key), split(self.self.value),
                                           attn_mask=bias)
        a = a.transpose(1, 2).reshape(b, t, h)
        return self.output.LayerNorm(self.output.dense(a) + x)


class Layer(nn.Module):
    def __init__(self, s: Shape):
        super().__init__()
        self.attention = Attention(s)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(s.hidden, s.ffn)
        self.output = nn.Module()
        self.output.dense = nn.Linear(s.ffn, s.hidden)
        self.output.LayerNorm = nn.LayerNorm(s.hidden, eps=s.eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, bias)
        return self.output.LayerNorm(self.output.dense(F.gelu(self.intermediate.dense(x))) + x)


class Bert(nn.Module):
    """Embeddings (the word table is set by the caller: `Q4Embedding`), post-LN layers; `forward` returns an
    object with `last_hidden_state`, and `config` carries the two sizes the reader reads, as BertModel's do."""

    def __init__(self, s: Shape):
        super().__init__()
        self.config = SimpleNamespace(hidden_size=s.hidden, num_hidden_layers=s.layers)
        self.embeddings = nn.Module()
        self.embeddings.word_embeddings = nn.Identity()  # replaced by the 4-bit table
        self.embeddings.position_embeddings = nn.Embedding(s.positions, s.hidden)
        self.embeddings.token_type_embeddings = nn.Embedding(s.types, s.hidden)
        self.embeddings.LayerNorm = nn.LayerNorm(s.hidden, eps=s.eps)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(Layer(s) for _ in range(s.layers))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        *_, x = self.hidden_states(input_ids, attention_mask)
        return SimpleNamespace(last_hidden_state=x)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Iterator[torch.Tensor]:
        """Each layer's output in turn (bench/early_layers.py pools the early ones)."""
        e = self.embeddings
        t = input_ids.shape[1]
        x = e.word_embeddings(input_ids) + e.position_embeddings.weight[:t] + e.token_type_embeddings.weight[0]
        x = e.LayerNorm(x)
        # padded keys get the dtype's minimum added to their scores, as BertModel's extended attention mask does
        bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for layer in self.encoder.layer:
            x = layer(x, bias)
            yield x


def encoder(f: E5File, layers: int | None = None) -> Bert:
    """The first `layers` layers of e5-small (all by default) for inference, word embeddings 4-bit."""
    from rag.e5 import model as e5model

    s = Shape(f.hidden, f.heads, f.ffn, layers or f.layers, f.max_positions, f.type_vocab, f.eps)
    with torch.device("meta"):  # every weight is loaded below: no random init
        m = Bert(s)
    m.to_empty(device="cpu")
    missing, unexpected = m.load_state_dict(e5model.state_dict(f, s.layers), strict=False)
    assert not unexpected and not missing, (missing, unexpected)
    m.embeddings.word_embeddings = e5model.Q4Embedding(f.tensors["emb.word"])
    return m.eval()
