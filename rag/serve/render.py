"""How answers and their sources are drawn: the chat bubble's markdown, the citation cards, the sources panel."""

from __future__ import annotations

import html
import re
from collections.abc import Callable

from rag.answer.wording import CITATION, CLOSEST_HEAD
from rag.lang import tables
from rag.models import CLOSEST, Answer, Hit
from rag.serve import viewer
from rag.serve.history import Turn

# Document text in an answer is text: no HTML, no markdown links or images from a document. URLs stay visible,
# as code (not clickable); the only live links are the app's own citation markers.
_URL = re.compile(r"(?:https?|ftp)://[^\s<>\"'`()\[\]，。；、！？）】》]+|www\.[^\s<>\"'`()\[\]，。；、！？）】》]+", re.IGNORECASE)
_MD_LIVE = re.compile(r"([\\<>\[\]])")  # what can open HTML, a link or an image


TURN_LINK = re.compile(r"\(#turn-([0-9a-f]{32})\)")


def answer_markdown(answer: str, turn: int | None = None) -> str:
    """An answer for the chat bubble: document text shown literally, [n] linked to its citation card
    (`turn`: the answer's position in the conversation, so that every answer keeps its own cards)."""
    key = f"{turn}-" if turn else ""
    out, pos = [], 0
    for m in re.finditer(f"{_URL.pattern}|{CITATION.pattern}", answer, re.IGNORECASE):
        out.append(_MD_LIVE.sub(r"\\\1", answer[pos:m.start()]))
        if m.group(0).startswith("["):
            out.append(f"[[{m.group(1)}]](#cite-{key}{m.group(1)})")
        else:
            out.append(f"`{m.group(0)}`")
        pos = m.end()
    out.append(_MD_LIVE.sub(r"\\\1", answer[pos:]))
    return "".join(out)


def _highlight(text: str, support: list[str], spans: list[tuple[int, int]] = ()) -> str:
    """The passage with the sentences the answer relies on marked (markdown emphasis dropped): by their
    offsets where the answerer knows them, else by finding the sentence (an LLM's words)."""
    if spans:
        out, pos = [], 0
        for a, b in sorted(set(spans)):
            if a < pos:  # overlapping spans are marked once
                a = pos
            if a >= b:
                continue
            out += [html.escape(text[pos:a].replace("**", "")), "<mark>", html.escape(text[a:b].replace("**", "")), "</mark>"]
            pos = b
        return "".join(out) + html.escape(text[pos:].replace("**", ""))
    out = html.escape(text.replace("**", ""))
    for s in sorted(set(support), key=len, reverse=True):
        frag = html.escape(s.replace("**", "").strip())
        if frag and frag in out:
            out = out.replace(frag, f"<mark>{frag}</mark>", 1)
    return out


def _is_table(text: str) -> bool:
    lines = text.split("\n")
    return len(lines) >= 3 and tables.is_row(lines[0]) and tables.is_separator(lines[1])


def _table_html(text: str, spans: list[tuple[int, int]] = ()) -> str:
    """A table chunk drawn as a table, the rows the answer relies on marked."""
    rows, pos = [], 0
    for i, line in enumerate(text.split("\n")):
        start, end = pos, pos + len(line)
        pos = end + 1
        if i == 1 or not tables.is_row(line):
            continue
        tag = "th" if i == 0 else "td"
        cells = "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in tables.cells(line))
        marked = any(a < end and start < b for a, b in spans)
        rows.append(f"<tr class='marked'>{cells}</tr>" if marked else f"<tr>{cells}</tr>")
    return f"<table class='cite-table'>{''.join(rows)}</table>"


def hit_card(h: Hit, base: str = "") -> dict:
    """A retrieved passage as a card (refusals show the closest ones)."""
    return {"n": h.rank, "source": h.chunk.source, "page": h.chunk.page, "heading": h.chunk.heading,
            "text": h.chunk.text, "ocr": h.chunk.ocr, "label": h.label, "note": h.note, "base": base}


def answer_cards(a: Answer) -> list[dict]:
    """What the citation column shows for a fresh answer: its citations, or for a refusal the closest passages."""
    if a.refused:
        return [hit_card(h) for h in a.retrieved[:CLOSEST]]
    by_text = {h.chunk.text: h for h in a.retrieved}
    out = []
    for c in a.citations:
        h = by_text.get(c.text)
        out.append({"n": c.n, "source": c.source, "page": c.page, "heading": c.heading, "text": c.text,
                    "support": c.support, "spans": c.spans, "label": c.label,
                    "ocr": h.chunk.ocr if h else False, "note": h.note if h else ""})
    return out


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!<>|~])")


def md_text(s: str) -> str:
    """A name shown literally in markdown."""
    return _MD_SPECIAL.sub(r"\\\1", s)


def turn_cards(t: Turn) -> list[dict]:
    """The same from a saved turn."""
    if t.refused:
        return [{**h, "n": h["rank"]} for h in t.retrieved]
    return [{**c, "spans": [tuple(s) for s in c.get("spans", [])]} for c in t.citations]


def turn_marker(turn_id: str) -> str:
    """An empty link at the end of a saved answer: the answer carries its turn id, so that feedback on it
    is recorded against that turn, never against a position in the chat."""
    return f"[](#turn-{turn_id})"


def render_cards(cards: list[dict], refused: bool, generation: str, faq: str = "", turn: int | None = None) -> str:
    """Citation cards; a card's "href" (a signed link) and "base" (its knowledge base) are shown where set.
    `turn`: the answer's position in the conversation (card ids cite-{turn}-{n})."""
    key = f"{turn}-" if turn else ""
    out = [faq] if faq else []
    if refused:
        out.append(f"<div class='refused-note'>{CLOSEST_HEAD}</div>")
    for c in cards:
        meta = []
        if c.get("label"):
            meta.append(f"<b>{html.escape(c['label'])}</b>")
        if c.get("note"):
            meta.append(f"<span class='superseded'>{html.escape(c['note'].strip('（）'))}</span>")
        if c.get("page"):
            meta.append(f"第 {c['page']} 页" + ("（OCR 识别）" if c.get("ocr") else ""))
        if c.get("heading"):
            meta.append(html.escape(c["heading"]))
        if c.get("base"):
            meta.append(f"知识库：{html.escape(c['base'])}")
        href, view = c.get("href", ""), c.get("view", "")
        a_tag = (f"<a class='view-link' href='{html.escape(view)}' target='_blank'>打开原文</a> " if view else "") + (
            f"<a class='download-link' href='{html.escape(href)}' target='_blank' download>下载</a>" if href else "")
        text, spans = c["text"], c.get("spans") or []
        body = _table_html(text, spans) if _is_table(text) else _highlight(text, c.get("support") or [], spans)
        out.append(
            f"<div class='cite-card' id='cite-{key}{c['n']}'><div class='cite-head'>[{c['n']}] {html.escape(c['source'])} {a_tag}</div>"
            f"<div class='cite-meta'>{' · '.join(meta)}</div><div class='cite-text'>{body}</div></div>")
    # The generation lets load tests check each answer against the index it was served from.
    return f"<div class='cite-list' data-generation='{html.escape(generation)}'>" + "\n".join(out) + "</div>"


EMPTY_CITES = "<div class='cite-empty'>回答的引用出处会显示在这里。</div>"


def render_panel(blocks: list[list]) -> str:
    """Every answer's sources, newest first: [turn, question, cards html] each, the newest open, the
    earlier ones folded (a click on one of their [n] opens them)."""
    if not blocks:
        return EMPTY_CITES
    out = []
    for i, (turn, question, cards) in enumerate(reversed(blocks)):
        q = html.escape(question if len(question) <= 30 else question[:30] + "…")
        out.append(f"<details class='turn-cites' data-turn='{int(turn)}'{' open' if i == 0 else ''}>"
                   f"<summary>第 {int(turn)} 问：{q}</summary>{cards}</details>")
    return "\n".join(out)


def with_links(cards: list[dict], base: str, links: dict[str, Callable[[str], str]]) -> list[dict]:
    """Each card names its base and links through it: a signed link only for a base this user may read."""
    for c in cards:
        c["base"] = c.get("base") or base
        link = links.get(c["base"])
        c["href"] = link(c["source"]) if link else ""
        c["view"] = viewer.view_link(c["href"], c["text"], c.get("spans")) if c["href"] else ""
    return cards
