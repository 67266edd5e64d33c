"""Sentence ends and the ways a text is cut into sentences and clauses. Different cuts on purpose, each
named for its use."""

from __future__ import annotations

import re

# Sentence-final punctuation (full and half width) and closing quotes/brackets that may follow it.
TERMINAL = "。！？；!?;…"
CLOSERS = "”’」』）)】》\"'"
# What ends a sentence of a generated answer (its citation markers go before it); ；and … do not.
ANSWER_END = "。！？!?"
# Full stops inside a line: a line that has one is body text, whatever its length.
BODY_STOPS = "。！？；"

# A sentence of a paragraph (line breaks inside it are kept): what chunks are packed from.
SENTENCE = re.compile(rf"[^{TERMINAL}]*[{TERMINAL}]+[{CLOSERS}]*|[^{TERMINAL}]+$")
# A sentence of a passage as the answer reads it: a line break ends one too (list items, table rows).
LINE_SENTENCE = re.compile(rf"[^{TERMINAL}\n]*(?:[{TERMINAL}]+[{CLOSERS}]*|\n|$)")
# A sentence of a generated answer with its citation markers ("…。[1][2]"); ；and … do not end one.
CITED_SENTENCE = re.compile(rf"[^{ANSWER_END}\n]*(?:\[\d+\])*[{ANSWER_END}]?(?:\[\d+\])*")
# A clause: cut at ，；： only, never mid-word.
CLAUSE = re.compile(r"[^，,；;：:]+[，,；;：:]?")


def ends_sentence(text: str) -> bool:
    """The line ends a sentence (or introduces what follows with a colon): a page or line break after it
    is a real one. Markdown emphasis and closing quotes after the stop do not count."""
    t = text.rstrip().rstrip(CLOSERS + "*")
    return not t or t[-1] in TERMINAL + "：:"
