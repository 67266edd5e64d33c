"""jieba tokenisation for BM25, with a user dictionary of the corpus's own quoted terms."""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable

from rag.lang import fingerprint, questions
from rag.lang import text as text_rules
from rag.lang.questions import INTERROGATIVE, STOPWORDS
from rag.lang.text import has_han, normalize

_PUNCT = re.compile(r"^[\W_]+$", re.UNICODE)
_QUOTED = re.compile(r"[“「『\"]([^“”「」『』\"\s，。、；：！？,.;:!?（）()]{2,12})[”」』\"]")


def quoted_terms(texts: Iterable[str], min_count: int = 1) -> list[str]:
    """Terms the documents themselves put in quotation marks (“四服务一加强”, “科创中国”…)."""
    counts: Counter[str] = Counter()
    for t in texts:
        for term in _QUOTED.findall(normalize_quotes(t)):
            if not term.isdigit() and has_han(term):
                counts[term] += 1
    return sorted(t for t, n in counts.items() if n >= min_count)


def normalize_quotes(text: str) -> str:
    # OCR often wraps a term as **“…”**; markdown emphasis must not hide the quotes.
    return text.replace("**", "")


def prepare(text: str) -> str:
    """The form jieba cuts: a user word `w` can change a text's tokens only if `prepare(w)` occurs in it."""
    return normalize(normalize_quotes(text)).lower()


def signature() -> str:
    """Changes whenever tokenisation rules change, so stored tokens are recomputed (vectors are kept)."""
    import hashlib

    import jieba

    # jieba's version too: its dictionary decides both the tokens and the part-of-speech tags of place names.
    rules = (fingerprint(questions, text_rules) + _PUNCT.pattern + "cut_for_search-v1 places-v2 fixed-total"
             + f" jieba-{getattr(jieba, '__version__', '?')}")
    return hashlib.sha1(rules.encode("utf-8")).hexdigest()[:12]


class Tokenizer:
    """A private jieba instance (no global state) plus the corpus's user words."""

    def __init__(self, user_words: Iterable[str] = (), base: "Tokenizer | None" = None):
        """`base`: copy the loaded dictionary of an existing tokenizer (~0.1 s instead of ~1 s), when
        its user words are a subset of ours (jieba cannot forget a word)."""
        import jieba

        jieba.setLogLevel(logging.WARNING)
        words = list(user_words)
        self._jieba = jieba.Tokenizer()
        self._tagger = None
        self.user_words: list[str] = []
        if base is not None and set(base.user_words) <= set(words):
            src = base._jieba
            self._jieba.FREQ, self._jieba.total = dict(src.FREQ), src.total
            self._jieba.user_word_tag_tab = dict(src.user_word_tag_tab)
            self._jieba.initialized = True
            self.user_words = list(base.user_words)
        else:
            self._jieba.initialize()
        self.add_words(words)

    @classmethod
    def reuse(cls, user_words: Iterable[str], base: "Tokenizer | None") -> "Tokenizer":
        """`base` itself when it has exactly these user words (tokenising only reads the dictionary, so
        sharing is thread-safe), else a new tokenizer copying what it can from `base`."""
        words = list(user_words)
        if base is not None and set(base.user_words) == set(words):
            return base
        return cls(words, base=base)

    def add_words(self, words: Iterable[str]) -> list[str]:
        """Add words; returns those that were new."""
        known = set(self.user_words)
        new = [w for w in words if w not in known]
        total = self._jieba.total
        for w in new:
            # A high frequency makes jieba keep the quoted term whole.
            self._jieba.add_word(normalize(w).lower(), freq=20000)
        # jieba adds each word's frequency to the total every route is scored against, so one new word
        # could re-cut texts that do not contain it; a fixed total keeps each text's tokens a function of
        # the words it contains, which lets a re-index re-tokenise only those (tokens equal a full rebuild's).
        self._jieba.total = total
        self.user_words.extend(new)
        return new

    def is_place_word(self, word: str) -> bool:
        """One jieba word tagged as a place or proper name (ns/nr/nrt/nz), from the loaded dictionary."""
        tags = self._pos_tagger().lcut(word)
        return len(tags) == 1 and tags[0].flag in ("ns", "nr", "nrt", "nz")

    def is_known_place(self, word: str) -> bool:
        """A place name in jieba's dictionary (tag ns). Stricter than `is_place_word`: words the
        dictionary lacks get a tag guessed by the HMM ("务城" from "服务城市" comes out ns)."""
        if not self._jieba.FREQ.get(word):
            return False
        tags = self._pos_tagger().lcut(word)
        return len(tags) == 1 and tags[0].flag == "ns"

    def _pos_tagger(self):
        if self._tagger is None:
            import jieba.posseg

            # POSTokenizer(self._jieba) would re-read the whole dictionary file for its tag table (~0.4 s per
            # call); jieba.posseg's own tagger already holds that table for the default dictionary ours uses.
            tagger = object.__new__(jieba.posseg.POSTokenizer)
            tagger.tokenizer = self._jieba
            # Shared, not copied: POSTokenizer only writes to it when the tokenizer has tagged user words,
            # and ours are added without tags.
            tagger.word_tag_tab = jieba.posseg.dt.word_tag_tab
            self._tagger = tagger
        return self._tagger

    def tokens(self, text: str) -> list[str]:
        t = prepare(text)
        return [
            w for w in self._jieba.cut_for_search(t)
            if w.strip() and w not in STOPWORDS and not _PUNCT.match(w) and not INTERROGATIVE.match(w)
        ]
