"""Query term weights (IDF from the BM25 index) and token matching, for the answer features."""

from __future__ import annotations

import math
import re

from rag.index.tokenizer import Tokenizer


def idf_weights(tokens: list[str], doc_freq, n_docs: int) -> dict[str, float]:
    """IDF per query token, from the BM25 index's document frequencies (unknown tokens weigh most)."""
    out = {}
    for t in set(tokens):
        df = doc_freq(t)
        out[t] = math.log(1 + (n_docs - df + 0.5) / (df + 0.5))
    return out


def contains_token(text: str, token: str) -> bool:
    """`token` occurs in `text` (both normalised, lower case). Han tokens match anywhere (Chinese has no
    spaces); a Latin or digit token only as a whole word: "is" is not in "this", "12" not in "2012"."""
    if not token.isascii() or not token.isalnum():
        return token in text
    return re.search(rf"(?<![a-z0-9]){re.escape(token)}(?![a-z0-9])", text) is not None


class Scorer:
    """Question-aware scoring over a tokenizer and the index's document frequencies."""

    def __init__(self, tokenizer: Tokenizer, doc_freq, n_docs: int):
        self.tokenizer = tokenizer
        self.doc_freq = doc_freq
        self.n_docs = max(n_docs, 1)

    def weights(self, question: str) -> dict[str, float]:
        return idf_weights(self.tokenizer.tokens(question), self.doc_freq, self.n_docs)

    def unknown(self, weights: dict[str, float]) -> frozenset[str]:
        """Query tokens no indexed passage has: no passage can be missing them more than another."""
        return frozenset(t for t in weights if not self.doc_freq(t))
