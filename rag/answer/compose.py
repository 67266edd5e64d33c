"""Answer text from chosen sentences: a [n] marker before each sentence's full stop, the citations it uses,
regulations quoted by article."""

from __future__ import annotations

import re

from rag.answer.candidates import Candidate
from rag.lang.lists import ITEM
from rag.lang.sentences import ANSWER_END
from rag.models import Citation


def compose(chosen: list[Candidate], cites: dict[str, Citation] | None = None) -> tuple[str, list[Citation]]:
    """Answer text with a [n] marker before each sentence's full stop, and the citations it uses.

    A sentence from a regulation opens with the article as staff quote it (《条例》第十二条规定：); a
    sentence from a superseded version says so after it. `cites` continues the numbering of earlier parts."""
    cites = {} if cites is None else cites
    parts = []
    quoted: set[str] = set()
    for cand in chosen:
        h = cand.hit
        c = h.chunk
        cite = cites.get(c.id)
        if cite is None:
            cite = cites[c.id] = Citation(len(cites) + 1, c.source, c.page, c.heading, c.text,
                                          label=h.label)
        cite.support.append(cand.text)
        if cand.start >= 0:
            cite.spans.append((cand.start, cand.end))
        body = display(cand.text)
        key = f"{c.source}\0{c.article}"
        if c.article and key not in quoted:
            quoted.add(key)
            body = re.sub(rf"^{re.escape(c.article)}\s*", "", body)
            body = f"{cite.label}规定：{body}"
        parts.append(_with_marker(body, cite.n) + h.note)
    return "".join(parts), list(cites.values())


def display(sentence: str) -> str:
    """A sentence as shown in an answer: list markers and markdown emphasis removed."""
    s = sentence.replace("**", "").strip()
    return ITEM.sub("", s)


def _with_marker(body: str, n: int) -> str:
    body = body.rstrip("；;，,:： ")
    end = "。"
    if body and body[-1] in ANSWER_END:
        body, end = body[:-1], body[-1]
    return f"{body}[{n}]{end}"
