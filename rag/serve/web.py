"""Gradio web chat: streamed answers, clickable citation cards, knowledge-base management, settings."""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from rag.answer.assistant import Assistant
from rag.answer.candidates import split_sentences
from rag.answer.instructions import looks_like_instruction
from rag.answer.wording import CITATION, CLOSEST_HEAD
from rag.lang import tables
from rag.models import CLOSEST, Answer, Backend, Hit, RetrievalMode
from rag.serve import export, feedback, kb, recycle, viewer
from rag.serve.evaltab import eval_tab
from rag.serve.faq_panel import FAQ_CSS, faq_section, render_faq
from rag.serve.guard import FileOwners, private_dirs, protect_output
from rag.serve.history import History, NotFound, Turn
from rag.serve.kbs import DEFAULT_ID, KB, KBError, Registry
from rag.serve.links import Signer
from rag.serve.multi import ask_many
from rag.settings import Settings

log = logging.getLogger("kexie.web")

EXAMPLES = ["什么是四服务一加强", "青岛市科协组建了多少支科技志愿服务队", "聊城市科普大篷车开进了哪些地方", "连云港市科协2017年开展了哪些学术活动"]
BACKENDS = {"离线抽取（默认）": Backend.EXTRACTIVE.value, "OpenAI 兼容接口": Backend.OPENAI.value, "本地 GGUF 模型": Backend.LLAMACPP.value}
# The question box while it takes a question, and while an answer is being written (locked, and says so).
READY = {"interactive": True, "placeholder": "请输入问题，例如：什么是四服务一加强"}
BUSY = {"interactive": False, "placeholder": "正在回答上一个问题，请稍候…"}
MODES = {"混合检索": RetrievalMode.HYBRID.value, "仅 BM25": RetrievalMode.BM25.value, "仅向量": RetrievalMode.VECTOR.value}

# Gradio's theme variables, so that cards stay readable in the dark colour scheme too.
CSS = """
.cite-card {border:1px solid var(--border-color-primary); border-radius:8px; padding:10px 12px; margin:8px 0;
            background:var(--background-fill-secondary); color:var(--body-text-color);}
.cite-card.flash {outline:3px solid #f0b429;}
.cite-head {font-weight:600; margin-bottom:4px;}
.cite-meta {color:var(--body-text-color-subdued); font-size:0.9em; margin-bottom:6px;}
.cite-text {white-space:pre-wrap; line-height:1.6;}
.cite-text mark {background:#fff3b0; color:#1f2328; padding:0 1px;}
.cite-table {border-collapse:collapse; white-space:normal; margin:4px 0; font-size:0.92em;}
.cite-table th, .cite-table td {border:1px solid var(--border-color-primary); padding:3px 6px; vertical-align:top;}
.cite-table th {background:var(--background-fill-primary);}
.cite-table tr.marked td {background:#fff3b0; color:#1f2328;}
.superseded {color:#9a6700;}
.dark .superseded, .dark .refused-note {color:#d29922;}
.cite-link {text-decoration:none; font-weight:600;}
.turn-cites {margin:6px 0;}
/* A phone: the question box and the latest answer on the first screen; sources below them, the
   conversation list and exports last (an empty export box is not shown). */
@media (max-width: 640px) {
  #chat-col {order: 1;} #cites-col {order: 2;} #side-col {order: 3;}
  #chatbot {height: 44vh !important; min-height: 260px;}
  #side-col #conv-file:not(:has(a)) {display: none;}
  .gradio-container > .main > .wrap > .contain h2 {margin: 4px 0;}
}
.turn-cites > summary {cursor:pointer; font-weight:600; padding:4px 0;}
.refused-note {color:#9a6700; margin-bottom:6px;}
/* The in-page viewer and the phone's source sheet. */
#kx-viewer, #kx-sheet {display:none; position:fixed; z-index:1000; background:var(--background-fill-primary);
  color:var(--body-text-color); box-shadow:0 0 0 100vmax rgba(0,0,0,0.45);}
#kx-viewer.open {display:flex; flex-direction:column; inset:4vh 6vw; border-radius:10px; overflow:hidden;}
#kx-sheet.open {display:block; left:0; right:0; bottom:0; max-height:75vh; overflow:auto; border-radius:12px 12px 0 0; padding:0 10px 12px;}
.kx-bar {display:flex; gap:8px; align-items:center; padding:8px 10px; border-bottom:1px solid var(--border-color-primary);
  position:sticky; top:0; background:var(--background-fill-primary);}
.kx-bar button, .kx-bar a {border:1px solid var(--border-color-primary); border-radius:6px; padding:3px 10px;
  background:var(--background-fill-secondary); color:var(--body-text-color); cursor:pointer; text-decoration:none; font-size:0.95em;}
.kx-bar button:disabled {opacity:0.4; cursor:default;}
.kx-title {flex:1; font-weight:600; overflow:hidden; text-overflow:ellipsis; white-space:nowrap;}
.kx-frame {flex:1; border:0; width:100%; background:#fff;}
@media (max-width: 640px) { #kx-viewer.open {inset:0; border-radius:0;} }
""" + FAQ_CSS

# Clicking [n] in an answer scrolls that answer's card n into view (Gradio renders answers as sanitised HTML).
HEAD = """<script>
// A random id per browser (a year), so saved conversations come back after a reload with login off.
if (!document.cookie.split('; ').some(c => c.startsWith('kexie_browser='))) {
  const id = Array.from(crypto.getRandomValues(new Uint8Array(16)), b => b.toString(16).padStart(2, '0')).join('');
  document.cookie = 'kexie_browser=' + id + '; path=/; max-age=31536000; SameSite=Lax';
}
document.addEventListener('click', function (e) {
  const a = e.target.closest('a');
  if (!a) return;
  const m = (a.getAttribute('href') || '').match(/^#(cite-\\d+(?:-\\d+)?)$/);
  if (!m) return;
  e.preventDefault();
  const card = document.getElementById(m[1]);
  if (!card) return;
  const block = card.closest('details');
  if (block) block.open = true;  // an earlier answer's sources are folded
  if (window.matchMedia('(max-width: 640px)').matches) { kxSheet(card); return; }  // a phone: the card in a sheet
  card.scrollIntoView({behavior: 'smooth', block: 'center'});
  card.classList.add('flash'); setTimeout(() => card.classList.remove('flash'), 1500);
}, true);

// A phone: [n] opens its card in a sheet over the chat, with a way back.
function kxSheet(card) {
  let sheet = document.getElementById('kx-sheet');
  if (!sheet) {
    sheet = document.createElement('div');
    sheet.id = 'kx-sheet'; sheet.setAttribute('role', 'dialog'); sheet.setAttribute('aria-label', '引用出处');
    sheet.innerHTML = "<div class='kx-bar'><button type='button' class='kx-back'>‹ 返回对话</button></div><div class='kx-body'></div>";
    sheet.querySelector('.kx-back').onclick = () => sheet.classList.remove('open');
    document.body.appendChild(sheet);
  }
  const copy = card.cloneNode(true);
  copy.removeAttribute('id'); copy.dataset.of = card.id;
  sheet.querySelector('.kx-body').replaceChildren(copy);
  sheet.classList.add('open');
}

// 打开原文: the cited passage in its document, over the page, with ‹ › through this answer's citations.
function kxViewer() {
  let v = document.getElementById('kx-viewer');
  if (v) return v;
  v = document.createElement('div');
  v.id = 'kx-viewer'; v.setAttribute('role', 'dialog'); v.setAttribute('aria-label', '原文');
  v.innerHTML = "<div class='kx-bar'><button type='button' class='kx-prev'>‹ 上一处</button>" +
    "<span class='kx-title'></span><button type='button' class='kx-next'>下一处 ›</button>" +
    "<a class='kx-dl' download>下载</a><button type='button' class='kx-close'>关闭</button></div>" +
    "<iframe class='kx-frame' title='原文'></iframe>";
  v.querySelector('.kx-close').onclick = () => { v.classList.remove('open'); v.querySelector('iframe').src = 'about:blank'; };
  v.querySelector('.kx-prev').onclick = () => kxShow(v.kxList, v.kxAt - 1);
  v.querySelector('.kx-next').onclick = () => kxShow(v.kxList, v.kxAt + 1);
  document.addEventListener('keydown', e => { if (e.key === 'Escape' && v.classList.contains('open')) v.querySelector('.kx-close').click(); });
  document.body.appendChild(v);
  return v;
}
function kxShow(list, i) {
  if (i < 0 || i >= list.length) return;
  const v = kxViewer(), a = list[i], card = a.closest('.cite-card');
  v.kxList = list; v.kxAt = i;
  v.querySelector('iframe').src = a.getAttribute('href');
  v.querySelector('.kx-title').textContent = card ? card.querySelector('.cite-head').firstChild.textContent.trim() : '';
  const dl = card && card.querySelector('a.download-link');
  v.querySelector('.kx-dl').href = dl ? dl.getAttribute('href') : a.getAttribute('href');
  v.querySelector('.kx-prev').disabled = i === 0;
  v.querySelector('.kx-next').disabled = i === list.length - 1;
  v.classList.add('open');
}
document.addEventListener('click', function (e) {
  const a = e.target.closest('a.view-link');
  if (!a) return;
  e.preventDefault();
  const sheetCard = a.closest('#kx-sheet .cite-card');
  const own = sheetCard ? document.getElementById(sheetCard.dataset.of) : a.closest('.cite-card');
  const list = own ? Array.from(own.closest('.cite-list').querySelectorAll('a.view-link')) : [a];
  const mine = own ? own.querySelector('a.view-link') : a;
  kxShow(list, Math.max(0, list.indexOf(mine)));
}, true);

// Copying an answer copies what it says: [n] without the link to its card, no turn marker, no escapes
// (the inverse of answer_markdown). Gradio copies with the Clipboard API where the page is a secure
// context, else through a hidden textarea: both are covered.
function kxPlain(t) {
  return String(t).replace(/\\s*\\[\\]\\(#turn-[0-9a-f]+\\)\\s*$/, '').replace(/\\[\\[(\\d+)\\]\\]\\(#cite-[\\d-]+\\)/g, '[$1]')
    .replace(/`((?:https?|ftp):\\/\\/[^`]+|www\\.[^`]+)`/gi, '$1').replace(/\\\\([\\\\<>\\[\\]])/g, '$1');
}
if (navigator.clipboard && navigator.clipboard.writeText) {
  const kxWrite = navigator.clipboard.writeText.bind(navigator.clipboard);
  navigator.clipboard.writeText = t => kxWrite(kxPlain(t));
}
document.addEventListener('copy', function (e) {
  const el = document.activeElement;
  if (!el || el.tagName !== 'TEXTAREA' || el.closest('#question') || !/\\(#(cite|turn)-/.test(el.value)) return;
  e.clipboardData.setData('text/plain', kxPlain(el.value.substring(el.selectionStart, el.selectionEnd)));
  e.preventDefault();
}, true);
</script>"""


class EndpointRefused(ValueError):
    """A typed LLM endpoint the admin has not allowed (settings.llm_allowed_urls)."""


def endpoint_settings(settings: Settings, base_url: str, model: str, api_key: str) -> Settings:
    """Settings for an endpoint typed in the page: the configured one or one the admin allowed, never any
    other host (the server would make requests for the user). The configured API key goes only to the
    configured endpoint: a typed URL gets the key typed with it, or none."""
    url = (base_url or "").strip() or settings.llm_base_url
    allowed = {u.strip().rstrip("/") for u in (settings.llm_base_url, *settings.llm_allowed_urls) if u.strip()}
    if url.rstrip("/") not in allowed:
        raise EndpointRefused("该接口地址未被管理员允许（管理员可在 kexie.toml 的 llm_allowed_urls 中添加）")
    same = url.rstrip("/") == settings.llm_base_url.rstrip("/")
    key = (api_key or "").strip() or (settings.llm_api_key if same else "")
    return dataclasses.replace(settings, llm_base_url=url, llm_model=(model or "").strip() or settings.llm_model,
                               llm_api_key=key)


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


@dataclasses.dataclass
class Confirm:
    """A confirmation for a destructive action: hidden until asked, names what will be removed."""

    box: gr.Group
    text: gr.Markdown
    yes: gr.Button
    target: gr.State  # what the question named: deleting it is what 确认删除 does, whatever was picked since

    @property
    def outputs(self) -> list:
        return [self.box, self.target]

    @staticmethod
    def close():
        return gr.update(visible=False), None


def confirm_box(elem_id: str) -> Confirm:
    with gr.Group(visible=False, elem_id=elem_id) as box:
        text = gr.Markdown()
        with gr.Row():
            yes = gr.Button("确认删除", variant="stop", size="sm", elem_id=f"{elem_id}-yes")
            no = gr.Button("取消", size="sm", elem_id=f"{elem_id}-no")
    c = Confirm(box, text, yes, gr.State(None))
    no.click(Confirm.close, None, c.outputs)
    return c


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


def _doc_table(settings: Settings) -> list[list]:
    return [[r.source, r.status, r.chunks, f"{r.size / 1024:.1f} KB", r.indexed_at, r.version, r.effective, r.reason]
            for r in kb.list_documents(settings)]


def chunk_rows(assistant: Assistant, source: str, counts: dict[str, tuple[int, int]] | None = None) -> list[list]:
    """A document's chunks as indexed: id, heading path, page, the feedback on answers citing it, text."""
    if not source:
        return []
    snap = assistant.retriever.snapshot()
    counts = counts or {}
    return [[c.id, c.heading, c.page or "", feedback.count_label(counts.get(c.text, (0, 0))),
             (INSTRUCTION_MARK if _has_instruction(c.text) else "") + c.text]
            for c in snap.chunks if c.source == source]


INSTRUCTION_MARK = "【注意：含疑似指令的文字，仅作资料，不会作为回答】"


def _has_instruction(text: str) -> bool:
    return any(looks_like_instruction(s) for s in split_sentences(text))


def hit_rows(hits: list[Hit]) -> list[list]:
    """The retrieval test table: the ranks and scores `kexie search` prints."""
    def num(x):
        return "" if x is None else round(float(x), 4)
    return [[h.rank, h.chunk.source, h.label or h.chunk.heading, num(h.score), h.bm25_rank or "", num(h.bm25_score),
             h.vector_rank or "", num(h.vector_score), h.chunk.text] for h in hits]


def browser_id(request: gr.Request | None) -> str:
    """The browser's id from its cookie (set by HEAD's script): conversations per browser with login off."""
    # Starlette's parser: one malformed cookie of another app on this host does not hide ours.
    cookies = getattr(getattr(request, "request", None), "cookies", None) or {}
    value = cookies.get("kexie_browser", "")
    if re.fullmatch(r"[0-9a-f]{32}", value):
        return value
    return f"session-{getattr(request, 'session_hash', None) or 'none'}"  # a client without cookies: this session only


def user_of(request: gr.Request | None) -> str | None:
    """The logged-in user (None with login off)."""
    return getattr(request, "username", None) or None if request is not None else None


def build_app(settings: Settings, assistant: Assistant | None = None, registry: Registry | None = None,
              signer: Signer | None = None) -> gr.Blocks:
    registry = registry or Registry(settings, assistant=assistant)
    signer = signer or Signer(settings.data_root)
    saved = History(registry.db)
    dirs = private_dirs(settings.data_root)
    # Gradio's upload folder is one per process, read from the environment: the first app's private one (or the
    # operator's own choice), made private too.
    if os.environ.get("GRADIO_TEMP_DIR"):
        dirs.pop("cache")  # the operator's folder: theirs to protect
    else:
        os.environ["GRADIO_TEMP_DIR"] = str(dirs["cache"])
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o700)
    exports = dirs["exports"]

    def may_read(user: str, kb_id: str) -> bool:
        base = registry.by_id(kb_id)
        return base is not None and registry.allowed(user or None, base)

    owners = FileOwners(may_read)
    quota = UploadQuota(settings.max_upload_mb_per_day, exempt=settings.auth_user)

    def made_for(request, path: Path) -> str:
        """A file produced for this user: only they may fetch it (through Gradio's cache)."""
        owners.add(path, user_of(request) or "")
        return str(path)

    def owner(request) -> str:
        user = user_of(request)
        return f"user:{user}" if user else f"browser:{browser_id(request)}"

    def is_admin(request) -> bool:
        user = user_of(request)
        return not settings.logins() or user == settings.auth_user

    def kb_choices(request) -> list[tuple[str, str]]:
        """The bases this user may see: shown by name, chosen by id (a name is only a label)."""
        return [(b.name, b.id) for b in registry.visible(user_of(request))]

    def linker(user, base: KB):
        return lambda source: signer.url(user, base.id, source)

    def conv_choices(own: str) -> list[tuple[str, str]]:
        return [(f"{c.title} · {time.strftime('%m-%d %H:%M', time.localtime(c.updated))}", c.id) for c in saved.list(own)]

    # -- chat ------------------------------------------------------------------------------
    def respond(message, chat, history, opts, conv, turn_ids, picked, panel, request: gr.Request):
        message = (message or "").strip()
        user, own = user_of(request), owner(request)
        if not message:
            yield chat, history, gr.update(), gr.update(value="", **READY), conv, turn_ids, gr.update(), panel
            return
        # The question box is locked, and says so, until this answer is done: a question sent meanwhile
        # would be dropped by the running event.
        busy = gr.update(value="", **BUSY)
        turn = sum(1 for t in turn_ids if t) + 1  # this answer's position among the saved ones
        chat = chat + [{"role": "user", "content": message}, {"role": "assistant", "content": "正在检索资料…"}]
        yield chat, history, gr.update(), busy, conv, turn_ids, gr.update(), panel
        try:
            llm = endpoint_settings(settings, opts.get("base_url", ""), opts.get("model", ""), opts.get("api_key", ""))
        except EndpointRefused:  # settings changed since they were applied: the configured endpoint
            llm = settings
        try:
            bases = [registry.get(n, user) for n in (picked or [])] or [registry.get(None, user)]
            final, fused = None, None
            kw = {"k": opts.get("k"), "mode": opts.get("mode"), "llm": llm}
            if len(bases) == 1:
                base = bases[0]
                for final in registry.assistant(base).ask_stream(message, history, opts.get("backend"), **kw):
                    chat[-1]["content"] = answer_markdown(final.answer, turn) or "正在生成回答…"
                    yield chat, history, gr.update(), busy, conv, turn_ids, gr.update(), panel
            else:
                final, base, fused = ask_many(registry, bases, message, history, backend=opts.get("backend"), **kw)
        except KBError as e:
            chat[-1]["content"] = f"无法回答：{e}"
            yield chat, history, gr.update(), gr.update(**READY), conv, turn_ids + [None], gr.update(), panel
            return
        except Exception as e:  # the page must stay usable; no internals or secrets in the message
            log.exception("answer failed")
            chat[-1]["content"] = f"出错了：{type(e).__name__}。请稍后再试或联系管理员。"
            yield chat, history, gr.update(), gr.update(**READY), conv, turn_ids + [None], gr.update(), panel
            return
        assert final is not None
        text = answer_markdown(final.answer, turn)
        if final.notice:
            text += "\n\n> " + answer_markdown(final.notice)
        health = registry.assistant(base).retriever.health  # a damaged index never answers silently
        if health:
            text += "\n\n> 注意：" + answer_markdown(health)
        history = history + [(message, final.answer)]
        names = [b.name for b in bases]
        try:
            tid = saved.add_turn(own, conv, final, base.name, names) if conv else None
        except NotFound:  # deleted in another tab: this answer starts a new conversation
            tid = None
        if tid is None:
            conv = saved.create(own, message, names)
            tid = saved.add_turn(own, conv, final, base.name, names)
        turn_ids = turn_ids + [tid]
        chat[-1]["content"] = text + "\n\n" + turn_marker(tid)
        cards = answer_cards(final)
        if fused is not None and final.refused:  # the closest passages of every base
            cards = [hit_card(h, b.name) for b, h in fused[:CLOSEST]]
        cards = with_links(cards, base.name, {b.name: linker(user, b) for b in bases})
        panel = panel + [[turn, message, render_cards(cards, final.refused, final.generation, render_faq(final.faq), turn)]]
        yield (chat, history, render_panel(panel), gr.update(value="", **READY), conv, turn_ids,
               gr.update(choices=conv_choices(own), value=conv), panel)

    def new_chat():
        """A new conversation: nothing of the last one stays (its hidden history and sources included)."""
        return [], [], EMPTY_CITES, gr.update(value="", **READY), "", [], gr.update(value=None), [], "", gr.update()

    def open_conv(cid, request: gr.Request):
        own, user = owner(request), user_of(request)
        if not cid:
            return new_chat()
        try:
            conv, turns = saved.get(own, cid), saved.turns(own, cid)
        except NotFound:
            return (*new_chat()[:6], gr.update(choices=conv_choices(own), value=None), [], "", gr.update())
        chat, history, panel, links = [], [], [], {}
        for k, t in enumerate(turns, 1):
            text = answer_markdown(t.answer, k) + ("\n\n> " + answer_markdown(t.notice) if t.notice else "")
            chat += [{"role": "user", "content": t.question},
                     {"role": "assistant", "content": text + "\n\n" + turn_marker(t.id)}]
            history.append((t.question, t.answer))
            if t.kb not in links:
                try:
                    links[t.kb] = linker(user, registry.get(t.kb, user))
                except KBError:  # the base was deleted or the grant withdrawn: the cards, without links
                    links[t.kb] = None
            cards = with_links(turn_cards(t), t.kb, {t.kb: links[t.kb]} if links[t.kb] else {})
            panel.append([k, t.question, render_cards(cards, t.refused, t.generation, render_faq(t.faq), k)])
        # Follow-ups go to the bases the conversation asked, where this user may still read them.
        ids = {b.name: b.id for b in registry.visible(user)}
        picked = [ids[n] for n in conv.kbs if n in ids]
        return (chat, history, render_panel(panel), gr.update(value="", **READY), cid, [t.id for t in turns],
                gr.update(), panel, conv.title, gr.update(value=picked) if picked else gr.update())

    def rename_conv(cid, title, request: gr.Request):
        own = owner(request)
        if not cid:
            return gr.update(), "请先打开一个对话。"
        try:
            saved.rename(own, cid, title)
        except NotFound:
            return gr.update(choices=conv_choices(own), value=None), "这个对话已被删除。"
        return gr.update(choices=conv_choices(own), value=cid), "已重命名。"

    def ask_delete_conv(cid, request: gr.Request):
        own = owner(request)
        try:
            c, n = saved.get(own, cid), len(saved.turns(own, cid))
        except NotFound:
            return gr.update(visible=False), "", None, "请先打开一个对话。"
        return gr.update(visible=True), f"确认删除对话 **{md_text(c.title)}**（{n} 问）？删除后无法恢复。", cid, ""

    def delete_conv(cid, request: gr.Request):
        own = owner(request)
        if cid:
            try:
                saved.delete(own, cid)
            except NotFound:
                pass
        return (*new_chat()[:6], gr.update(choices=conv_choices(own), value=None), [], "", gr.update())

    def export_conv(cid, fmt, request: gr.Request):
        own = owner(request)
        if not cid:
            return None, "请先打开一个对话。"
        try:
            conv, turns = saved.get(own, cid), saved.turns(own, cid)
        except NotFound:
            return None, "这个对话已被删除。"
        folder = exports / uuid.uuid4().hex[:8]
        folder.mkdir(parents=True, exist_ok=True)
        try:
            name = kb.safe_name(conv.title.rstrip("…"))
        except kb.UploadRejected:  # a title of only punctuation
            name = "对话"
        if fmt == "docx":
            path = export.docx(conv, turns, folder / f"{name}.docx")
        else:
            path = folder / f"{name}.md"
            path.write_text(export.markdown(conv, turns), encoding="utf-8")
        return made_for(request, path), f"已导出：{path.name}"

    def export_md(cid, request: gr.Request):
        return export_conv(cid, "md", request)

    def export_docx(cid, request: gr.Request):
        return export_conv(cid, "docx", request)

    # -- feedback --------------------------------------------------------------------------
    def on_like(turn_ids, data: gr.LikeData):
        """The rating goes to the turn whose id the liked message carries (turn_marker), never to a position."""
        m = TURN_LINK.search(json.dumps(data.value, ensure_ascii=False))
        if m is None:
            return None, gr.update(), "这条回答还没有保存（或不是回答），请在回答完成后再评价。"
        tid = m.group(1)
        saved_ids = [t for t in turn_ids if t]
        if tid not in saved_ids:
            return None, gr.update(), "这条回答不属于当前对话，请重新打开对话后再评价。"
        i = saved_ids.index(tid)
        if data.liked not in (True, False):  # the 👍/👎 clicked again: taken back
            return {"turn": tid, "rating": 0, "n": i + 1}, gr.update(visible=False), f"已撤销对第 {i + 1} 个回答的评价。"
        rating = 1 if data.liked is True else -1
        return {"turn": tid, "rating": rating, "n": i + 1}, gr.update(visible=True), \
            f"已记录：第 {i + 1} 个回答{'有用' if rating > 0 else '有误'}。可补充说明或填写正确答案后提交。"

    def rate_saved(pending, request: gr.Request):
        if not pending:
            return
        try:
            if pending["rating"]:
                saved.rate(owner(request), pending["turn"], pending["rating"])
            else:
                saved.unrate(owner(request), pending["turn"])
        except NotFound:  # the conversation was deleted in another tab
            pass

    def submit_feedback(pending, comment, correction, request: gr.Request):
        if not pending or not pending["rating"]:
            return gr.update(), "请先点击某个回答下方的“有用”或“有误”（赞或踩图标）。", comment, correction
        try:
            saved.rate(owner(request), pending["turn"], pending["rating"], comment, correction)
        except NotFound:
            return gr.update(), "这条回答不存在或不属于当前用户。", comment, correction
        return gr.update(visible=False), f"已提交对第 {pending['n']} 个回答的反馈，谢谢！", "", ""

    def feedback_rows(only_down, request: gr.Request):
        own = None if is_admin(request) else owner(request)
        rows = saved.feedback(own, -1 if only_down else None)
        return [[time.strftime("%Y-%m-%d %H:%M", time.localtime(f.created)), "有用" if f.rating > 0 else "有误", f.question,
                 feedback.answer_of(f), f.comment, f.correction, f.kb] for f in rows]

    def export_feedback(only_down, request: gr.Request):
        own = None if is_admin(request) else owner(request)
        items = saved.feedback(own, -1 if only_down else None)
        folder = exports / uuid.uuid4().hex[:8]
        n, review = feedback.export(items, folder / "feedback.jsonl")
        return made_for(request, folder / "feedback.jsonl"), f"已导出 {n} 条（其中待审核 {review} 条），可在“评测”页或用 kexie eval 运行。"

    # -- knowledge bases ------------------------------------------------------------------
    def managed(kb_id, request, change: bool = False) -> tuple[KB, Settings, Assistant]:
        """The base chosen in the KB tab (its id): to look at (granted), or to change (`change`: its creator or
        the admin)."""
        user = user_of(request)
        base = registry.managed(kb_id or None, user) if change else registry.get(kb_id or None, user)
        return base, registry.settings_for(base), registry.assistant(base)

    def sources_of(s: Settings) -> list[str]:
        return [r.source for r in kb.list_documents(s)]

    def kb_view(name, request: gr.Request):
        """Everything in the KB tab that depends on the managed base."""
        try:
            base, s, _ = managed(name, request)
        except KBError as e:
            return [], gr.update(choices=[]), gr.update(choices=[]), f"{e}"
        srcs = sources_of(s)
        return _doc_table(s), gr.update(choices=srcs, value=None), gr.update(choices=srcs, value=None), f"当前知识库：**{base.name}**"

    def vector_status(name, request: gr.Request):
        try:
            base, _, _ = managed(name, request)
        except KBError:
            return ""
        return registry.keeper(base).status()

    def reindex(name, request, progress):
        base, _, _ = managed(name, request, change=True)
        keeper = registry.keeper(base)
        # Returns once the chat answers from the new generation, so "done" means searchable.
        rep = keeper.reindex(lambda stage, done, total: progress(done / max(total, 1), desc=stage))
        filling = keeper.vector_line()
        lines = [f"索引完成（{base.name}）：{rep.summary()}。"]
        if filling:
            lines.append(f"{filling}（后台进行，期间检索使用已有向量与 BM25）")
        return "\n".join(lines + [f"- {md_text(line)}" for line in rep.file_lines()])  # file names are shown literally

    def upload(name, files, request: gr.Request, progress=gr.Progress()):
        try:
            base, s, _ = managed(name, request, change=True)
        except KBError as e:
            return f"{e}", gr.update(), gr.update(), gr.update(), gr.update()
        msgs = []
        user = user_of(request)
        for f in files or []:
            path = Path(f if isinstance(f, str) else f.name)
            if not quota.take(user, path.stat().st_size if path.is_file() else 0):
                msgs.append(f"已拒绝：{path.name}（今日上传量已达上限 {settings.max_upload_mb_per_day} MB，请明天再试或联系管理员）")
                continue
            try:
                msgs.append(kb.save_upload(s, path, path.name).message)
            except kb.UploadRejected as e:
                msgs.append(f"已拒绝：{e}")
        msgs.append(reindex(name, request, progress))
        srcs = sources_of(s)
        # The box is emptied: the next upload must not send these files again.
        return "\n".join(msgs), _doc_table(s), gr.update(choices=srcs), gr.update(choices=srcs), None

    def ask_delete_doc(name, source, request: gr.Request):
        """The confirmation, naming the document (nothing is removed yet)."""
        try:
            managed(name, request, change=True)
        except KBError as e:
            return gr.update(visible=False), "", None, f"{e}"
        if not source:
            return gr.update(visible=False), "", None, "请先选择要删除的文档。"
        return (gr.update(visible=True), f"确认删除文档 **{md_text(source)}**？删除后 {recycle.KEEP_DAYS} 天内可在下方“回收站”中恢复。",
                [name, source], "")

    def delete(target, request: gr.Request, progress=gr.Progress()):
        name, source = target or (None, None)
        try:
            base, s, _ = managed(name, request, change=True)
            if not source:
                return "请先选择要删除的文档。", _doc_table(s), gr.update(), gr.update()
            registry.delete_document(base.id, source, user_of(request))
        except KBError as e:
            return f"删除失败：{e}", gr.update(), gr.update(), gr.update()
        msg = f"已删除：{md_text(source)}（{recycle.KEEP_DAYS} 天内可在“回收站”中恢复）\n" + reindex(name, request, progress)
        srcs = sources_of(s)
        return msg, _doc_table(s), gr.update(choices=srcs, value=None), gr.update(choices=srcs, value=None)

    def recycle_view(request: gr.Request):
        """The recycle bin as this user may restore from it: a table and the picker."""
        now = time.time()
        items = registry.restorable(user_of(request))
        rows = [["知识库" if i.kind == "base" else "文档", i.name, i.kb_name, i.by or "—",
                 time.strftime("%Y-%m-%d %H:%M", time.localtime(i.deleted)), f"{i.days_left(now)} 天"] for i in items]
        return rows, gr.update(choices=[(i.label, i.id) for i in items], value=None)

    def restore(item_id, request: gr.Request, progress=gr.Progress()):
        if not item_id:
            return "请先在回收站中选择要恢复的项。", gr.update(), gr.update(), gr.update(), gr.update()
        try:
            item, base = registry.restore(item_id, user_of(request))
        except KBError as e:
            return f"恢复失败：{e}", gr.update(), gr.update(), gr.update(), gr.update()
        msg = f"已恢复{md_text(item.label)}" + (f"，名称改为“{md_text(base.name)}”（原名已被占用）" if item.kind == "base" and base.name != item.name else "")
        if item.kind == "document":
            try:
                msg += "\n" + reindex(base.id, request, progress)
            except KBError as e:
                msg += f"\n（未能重新索引：{e}）"
        choices = kb_choices(request)
        return msg, kb_lists(request, base.id), gr.update(choices=choices), *recycle_view(request)

    def do_reindex(name, request: gr.Request, progress=gr.Progress()):
        try:
            _, s, _ = managed(name, request, change=True)
            msg = reindex(name, request, progress)
        except KBError as e:
            return f"{e}", gr.update(), gr.update(), gr.update()
        srcs = sources_of(s)
        return msg, _doc_table(s), gr.update(choices=srcs), gr.update(choices=srcs)

    def kb_lists(request, value=None):
        ids = [i for _, i in kb_choices(request)]
        return gr.update(choices=kb_choices(request), value=value if value in ids else (ids[0] if ids else None))

    def kb_create(new, request: gr.Request):
        try:
            base = registry.create(new, user_of(request))
        except KBError as e:
            return f"创建失败：{e}", gr.update(), gr.update(choices=kb_choices(request))
        return f"已创建知识库：{base.name}", kb_lists(request, base.id), gr.update(choices=kb_choices(request))

    def kb_rename(kb_id, new, request: gr.Request):
        try:
            base = registry.rename(kb_id, new, user_of(request))
        except KBError as e:
            return f"重命名失败：{e}", gr.update(), gr.update(choices=kb_choices(request))
        return f"已重命名为：{base.name}", kb_lists(request, base.id), gr.update(choices=kb_choices(request))

    def ask_delete_kb(kb_id, request: gr.Request):
        """The confirmation, naming the base and how many documents go with it."""
        try:
            base = registry.managed(kb_id or None, user_of(request))
            if base.id == DEFAULT_ID:
                raise KBError("默认知识库不能删除")
        except KBError as e:
            return gr.update(visible=False), "", None, f"{e}"
        n = len(kb.list_documents(registry.settings_for(base)))
        return (gr.update(visible=True), f"确认删除知识库 **{md_text(base.name)}**（含 {n} 个文档）？删除后 {recycle.KEEP_DAYS} 天内"
                                         "可在下方“回收站”中恢复。", base.id, "")

    def kb_delete(kb_id, request: gr.Request):
        try:
            base = registry.managed(kb_id or None, user_of(request))
            registry.delete(base.id, user_of(request))
        except KBError as e:
            return f"删除失败：{e}", gr.update(), gr.update(choices=kb_choices(request))
        choices = kb_choices(request)
        return (f"已删除知识库：{md_text(base.name)}（{recycle.KEEP_DAYS} 天内可在“回收站”中恢复）", kb_lists(request),
                gr.update(choices=choices, value=[i for _, i in choices][:1]))

    def show_chunks(name, source, request: gr.Request):
        try:
            base, _, a = managed(name, request)
        except KBError:
            return []
        # Everyone's feedback: a manager fixes the passages that keep producing rejected answers.
        return chunk_rows(a, source, feedback.passage_counts(saved.feedback(None), base.name, source))

    def hit_test(name, query, request: gr.Request):
        query = (query or "").strip()
        if not query:
            return [], "请输入检索词。"
        try:
            _, s, a = managed(name, request)
        except KBError as e:
            return [], f"{e}"
        hits = a.retriever.search(query, max(s.top_k, 10))
        msg = f"共 {len(hits)} 条，按融合得分排序；BM25 / 向量各自的名次与得分见右侧各列。"
        faq = a.faq_index()
        if faq is not None:  # curated pairs are searchable too
            found = faq.search(query, 3)
            msg += "\n\n标准问答：" + "；".join(
                f"{p.question}（{p.file} 第 {p.row} 行，相似度 {score:.2f}{'，达到阈值' if score >= faq.threshold else ''}）"
                for p, score in found)
        return hit_rows(hits), msg

    def on_load(request: gr.Request):
        own = owner(request)
        choices = kb_choices(request)
        who = user_of(request)
        greet = f"当前用户：**{who}**" if who else "未启用登录：对话记录保存在本浏览器对应的服务器端存储中。"
        first = [i for _, i in choices][:1]
        return (gr.update(choices=conv_choices(own), value=None), gr.update(choices=choices, value=first),
                gr.update(choices=choices, value=first[0] if first else None), greet)

    def save_opts(old, k, mode, backend, base_url, model, api_key):
        try:
            endpoint_settings(settings, base_url, model, api_key)
        except EndpointRefused as e:  # the same notice whatever the address: nothing is contacted
            return old, f"设置未应用：{e}"
        opts = {"k": int(k), "mode": MODES[mode], "backend": BACKENDS[backend], "base_url": base_url, "model": model, "api_key": api_key}
        return opts, f"当前回答后端：**{backend}** · 检索：{mode} · top-k {int(k)}"

    default_backend = next((k for k, v in BACKENDS.items() if v == settings.answer_backend), "离线抽取（默认）")
    default_mode = next((k for k, v in MODES.items() if v == settings.retrieval_mode), "混合检索")
    # Cached uploads and outputs older than a day are deleted every hour.
    with gr.Blocks(title="科协问答", delete_cache=(3600, 86400)) as demo:
        demo.kexie_owners = owners  # the Gate (rag/serve/guard.py) checks every file request against them
        gr.Markdown("## 科协问答\n依据知识库中的报告与政策文件回答问题，每句话都标注出处，可点击 [n] 查看原文段落。")
        opts = gr.State({"k": settings.top_k, "mode": settings.retrieval_mode, "backend": settings.answer_backend,
                         "base_url": settings.llm_base_url, "model": settings.llm_model, "api_key": ""})
        history = gr.State([])
        conv = gr.State("")
        turn_ids = gr.State([])
        panel = gr.State([])  # [turn, question, cards html] for every answer of the conversation
        pending = gr.State(None)
        with gr.Tabs():
            with gr.Tab("问答", id="chat"):
                status = gr.Markdown(f"当前回答后端：**{default_backend}** · 检索：{default_mode} · top-k {settings.top_k}",
                                     elem_id="backend-status")
                with gr.Row():
                    with gr.Column(scale=1, min_width=220, elem_id="side-col"):
                        who = gr.Markdown(elem_id="who")
                        new_btn = gr.Button("＋ 新对话", elem_id="new-chat")
                        conv_pick = gr.Radio([], label="对话记录", elem_id="conv-list")
                        conv_title = gr.Textbox(label="对话标题", elem_id="conv-title")
                        with gr.Row():
                            rename_btn = gr.Button("重命名", size="sm", elem_id="conv-rename")
                            del_conv_btn = gr.Button("删除", size="sm", variant="stop", elem_id="conv-delete")
                        ok_conv = confirm_box("confirm-conv")
                        with gr.Row():
                            md_btn = gr.Button("导出 Markdown", size="sm", elem_id="conv-export-md")
                            docx_btn = gr.Button("导出 Word", size="sm", elem_id="conv-export-docx")
                        conv_file = protect_output(gr.File(label="导出文件", interactive=False, elem_id="conv-file"), owners)
                        conv_msg = gr.Markdown(elem_id="conv-msg")
                    with gr.Column(scale=3, elem_id="chat-col"):
                        kb_pick = gr.Dropdown([], multiselect=True, label="知识库（可多选，结果跨库融合）", elem_id="kb-pick")
                        chatbot = gr.Chatbot(label="对话", height=480, elem_id="chatbot", feedback_options=("Like", "Dislike"))
                        with gr.Group(visible=False, elem_id="feedback-form") as fb_form:
                            fb_comment = gr.Textbox(label="说明（可选）", elem_id="fb-comment")
                            fb_correct = gr.Textbox(label="正确答案（可选，将成为评测题的标准答案）", elem_id="fb-correction")
                            fb_send = gr.Button("提交反馈", elem_id="fb-submit")
                        fb_msg = gr.Markdown(elem_id="fb-msg")
                        box = gr.Textbox(label="问题", elem_id="question", **READY)
                        with gr.Row():
                            send = gr.Button("发送", variant="primary", elem_id="send")
                            clear_btn = gr.Button("清空对话", elem_id="clear")
                        gr.Examples(EXAMPLES, inputs=box, label="示例问题")
                    with gr.Column(scale=2, elem_id="cites-col"):
                        gr.Markdown("### 引用出处")
                        cites = gr.HTML(EMPTY_CITES, elem_id="citations")
            with gr.Tab("知识库", id="kb"):
                with gr.Row():
                    kb_manage = gr.Dropdown([], label="管理的知识库", elem_id="kb-manage")
                    kb_new_name = gr.Textbox(label="名称（新建或重命名）", elem_id="kb-name")
                    kb_create_btn = gr.Button("新建知识库", elem_id="kb-create")
                    kb_rename_btn = gr.Button("重命名", elem_id="kb-rename")
                    kb_delete_btn = gr.Button("删除知识库", variant="stop", elem_id="kb-delete")
                ok_kb = confirm_box("confirm-kb")
                kb_info = gr.Markdown(elem_id="kb-info")
                # No file_types: Gradio's own check answers in English ("Invalid file type"); the upload
                # handler refuses other types in Chinese, naming the supported ones (rag/serve/kb.py).
                files = gr.File(label=f"上传文档（{' / '.join(t.lstrip('.') for t in kb.upload_types(settings))}，可多选）",
                                file_count="multiple", elem_id="upload")
                with gr.Row():
                    upload_btn = gr.Button("上传并索引", variant="primary", elem_id="upload-btn")
                    reindex_btn = gr.Button("重新索引（增量）", elem_id="reindex-btn")
                kb_msg = gr.Markdown(elem_id="kb-msg")
                vec_msg = gr.Markdown(elem_id="vector-status")
                table = gr.Dataframe([], headers=["文档", "状态", "段落数", "大小", "索引时间", "版本", "施行日期", "说明"],
                                     interactive=False, elem_id="doc-table")
                with gr.Row():
                    pick = gr.Dropdown([], label="选择文档", elem_id="delete-pick")
                    del_btn = gr.Button("删除所选文档", variant="stop", elem_id="delete-btn")
                ok_doc = confirm_box("confirm-doc")
                faq_sec = faq_section(lambda name, request: managed(name, request, change=True)[1], kb_manage)
                with gr.Accordion("查看段落（索引中的分块）", open=False, elem_id="chunk-view"):
                    chunk_doc = gr.Dropdown([], label="文档", elem_id="chunk-doc")
                    chunk_table = gr.Dataframe([], headers=["段落 id", "标题路径", "页码", "反馈", "正文"], interactive=False,
                                               wrap=True, column_widths=["12%", "20%", "6%", "8%", "54%"], elem_id="chunk-table")
                with gr.Accordion(f"回收站（删除的知识库与文档保留 {recycle.KEEP_DAYS} 天）", open=False, elem_id="recycle") as bin_acc:
                    bin_table = gr.Dataframe([], headers=["类型", "名称", "所在知识库", "删除人", "删除时间", "剩余"], interactive=False,
                                             elem_id="recycle-table")
                    with gr.Row():
                        bin_pick = gr.Dropdown([], label="选择要恢复的项", elem_id="recycle-pick")
                        bin_restore = gr.Button("恢复", elem_id="recycle-restore")
                with gr.Accordion("命中测试（检索测试）", open=False, elem_id="hit-test"):
                    with gr.Row():
                        hit_q = gr.Textbox(label="检索词", elem_id="hit-query", scale=4)
                        hit_btn = gr.Button("测试", elem_id="hit-btn", scale=1)
                    hit_msg = gr.Markdown(elem_id="hit-msg")
                    hit_table = gr.Dataframe([], headers=["名次", "文档", "标题路径", "融合得分", "BM25 名次", "BM25 得分", "向量名次",
                                                          "向量得分", "正文"], interactive=False, wrap=True, elem_id="hit-table",
                                             column_widths=["5%", "15%", "14%", "7%", "6%", "7%", "6%", "7%", "33%"])
            with gr.Tab("反馈", id="feedback") as fb_tab:
                only_down = gr.Checkbox(label="只看“有误”", elem_id="fb-only-down")
                fb_table = gr.Dataframe([], headers=["时间", "评价", "问题", "回答", "说明", "正确答案", "知识库"], interactive=False,
                                        wrap=True, elem_id="fb-table")
                with gr.Row():
                    fb_refresh = gr.Button("刷新", elem_id="fb-refresh")
                    fb_export = gr.Button("导出为评测数据集（JSONL）", elem_id="fb-export")
                fb_file = protect_output(gr.File(label="导出文件", interactive=False, elem_id="fb-file"), owners)
                fb_export_msg = gr.Markdown(elem_id="fb-export-msg")
            eval_tab(settings, registry, user_of, owners, exports)
            with gr.Tab("设置", id="settings"):
                k = gr.Slider(1, 20, value=settings.top_k, step=1, label="检索条数 top-k")
                mode = gr.Radio(list(MODES), value=default_mode, label="检索模式")
                backend = gr.Dropdown(list(BACKENDS), value=default_backend, label="回答后端")
                # The GGUF path is configuration only: a web form must not make the server open arbitrary files.
                gguf = Path(settings.gguf_path).name if settings.gguf_path else "未配置（在 kexie.toml 或环境变量 KEXIE_GGUF_PATH 中设置 gguf_path）"
                gr.Markdown(f"本地 GGUF 模型：{gguf}", elem_id="gguf-info")
                base_url = gr.Textbox(value=settings.llm_base_url, label="OpenAI 兼容接口地址（base URL）")
                model = gr.Textbox(value=settings.llm_model, label="模型名称")
                api_key = gr.Textbox(value="", type="password", label="API Key（留空时：配置中的地址使用配置的 Key，其他地址不发送 Key）")
                apply = gr.Button("应用设置", elem_id="apply-settings")

        chat_outs = [chatbot, history, cites, box, conv, turn_ids, conv_pick, panel]
        conv_outs = [*chat_outs, conv_title, kb_pick]
        ask_in = [box, chatbot, history, opts, conv, turn_ids, kb_pick, panel]
        box.submit(respond, ask_in, chat_outs)
        send.click(respond, ask_in, chat_outs)
        clear_btn.click(new_chat, None, conv_outs)
        chatbot.clear(new_chat, None, conv_outs)  # the chat's own 🗑 starts a new conversation too
        new_btn.click(new_chat, None, conv_outs)
        conv_pick.input(open_conv, [conv_pick], conv_outs)
        rename_btn.click(rename_conv, [conv, conv_title], [conv_pick, conv_msg])
        del_conv_btn.click(ask_delete_conv, [conv], [ok_conv.box, ok_conv.text, ok_conv.target, conv_msg])
        ok_conv.yes.click(delete_conv, [ok_conv.target], conv_outs).then(ok_conv.close, None, ok_conv.outputs)
        md_btn.click(export_md, [conv], [conv_file, conv_msg])
        docx_btn.click(export_docx, [conv], [conv_file, conv_msg])
        chatbot.like(on_like, [turn_ids], [pending, fb_form, fb_msg]).then(rate_saved, [pending], None)
        fb_send.click(submit_feedback, [pending, fb_comment, fb_correct], [fb_form, fb_msg, fb_comment, fb_correct])
        for ev in (fb_refresh.click, only_down.change, fb_tab.select):  # opening the tab shows the latest
            ev(feedback_rows, [only_down], fb_table)
        fb_export.click(export_feedback, [only_down], [fb_file, fb_export_msg])

        kb_outs = [table, pick, chunk_doc, kb_info]
        kb_manage.change(kb_view, kb_manage, kb_outs)
        kb_manage.change(faq_sec.refresh, faq_sec.refresh_inputs, faq_sec.refresh_outputs)
        upload_btn.click(upload, [kb_manage, files], [kb_msg, table, pick, chunk_doc, files])
        reindex_btn.click(do_reindex, kb_manage, [kb_msg, table, pick, chunk_doc])
        gr.Timer(5).tick(vector_status, kb_manage, vec_msg)  # 向量索引 63%，预计 41 分钟
        kb_manage.change(vector_status, kb_manage, vec_msg)
        bin_outs = [bin_table, bin_pick]
        del_btn.click(ask_delete_doc, [kb_manage, pick], [ok_doc.box, ok_doc.text, ok_doc.target, kb_msg])
        ok_doc.yes.click(delete, [ok_doc.target], [kb_msg, table, pick, chunk_doc]).then(
            ok_doc.close, None, ok_doc.outputs).then(recycle_view, None, bin_outs)
        bin_acc.expand(recycle_view, None, bin_outs)
        bin_restore.click(restore, [bin_pick], [kb_msg, kb_manage, kb_pick, *bin_outs])
        kb_create_btn.click(kb_create, kb_new_name, [kb_msg, kb_manage, kb_pick])
        kb_rename_btn.click(kb_rename, [kb_manage, kb_new_name], [kb_msg, kb_manage, kb_pick])
        kb_delete_btn.click(ask_delete_kb, kb_manage, [ok_kb.box, ok_kb.text, ok_kb.target, kb_msg])
        ok_kb.yes.click(kb_delete, [ok_kb.target], [kb_msg, kb_manage, kb_pick]).then(
            ok_kb.close, None, ok_kb.outputs).then(recycle_view, None, bin_outs)
        chunk_doc.change(show_chunks, [kb_manage, chunk_doc], chunk_table)
        hit_btn.click(hit_test, [kb_manage, hit_q], [hit_table, hit_msg])
        hit_q.submit(hit_test, [kb_manage, hit_q], [hit_table, hit_msg])
        apply.click(save_opts, [opts, k, mode, backend, base_url, model, api_key], [opts, status])
        demo.load(on_load, None, [conv_pick, kb_pick, kb_manage, who])
    return demo


class UploadQuota:
    """Bytes each logged-in user may upload a day (in memory: a restart forgives; the admin is exempt)."""

    def __init__(self, mb_per_day: int, exempt: str = ""):
        self.limit, self.exempt = mb_per_day * 1024 * 1024, exempt
        self._used: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def take(self, user: str | None, size: int) -> bool:
        if not user or user == self.exempt or self.limit <= 0:
            return True
        day = time.strftime("%Y-%m-%d")
        with self._lock:
            self._used = {k: v for k, v in self._used.items() if k[1] == day}
            used = self._used.get((user, day), 0)
            if used + size > self.limit:
                return False
            self._used[(user, day)] = used + size
            return True


def server_address(settings: Settings, env: dict[str, str] | None = None) -> tuple[str, int]:
    """Host and port: the kexie settings (KEXIE_HOST/KEXIE_PORT, kexie.toml), else Gradio's own
    GRADIO_SERVER_NAME/GRADIO_SERVER_PORT, else 127.0.0.1:7860."""
    env = os.environ if env is None else env
    default = Settings.__dataclass_fields__
    host, port = settings.host, settings.port
    if host == default["host"].default and env.get("GRADIO_SERVER_NAME") and "KEXIE_HOST" not in env:
        host = env["GRADIO_SERVER_NAME"]
    if port == default["port"].default and env.get("GRADIO_SERVER_PORT", "").isdigit() and "KEXIE_PORT" not in env:
        port = int(env["GRADIO_SERVER_PORT"])
    return host, port
