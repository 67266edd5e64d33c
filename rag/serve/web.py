"""Gradio web chat: the page's layout; each tab is its own module under rag/serve/tabs/."""

from __future__ import annotations

import os
import threading
import time

import gradio as gr

from rag.answer.assistant import Assistant
from rag.serve.evaltab import eval_tab
from rag.serve.faq_panel import FAQ_CSS
from rag.serve.kbs import Registry
from rag.serve.links import Signer
from rag.serve.tabs import bases, chat, conversations, feedback, passages
from rag.serve.tabs.page import Page, user_of
from rag.serve.tabs.settings import Choices
from rag.settings import Settings

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




def build_app(settings: Settings, assistant: Assistant | None = None, registry: Registry | None = None,
              signer: Signer | None = None) -> gr.Blocks:
    page = Page(settings, assistant, registry, signer, UploadQuota(settings.max_upload_mb_per_day, exempt=settings.auth_user))
    # Cached uploads and outputs older than a day are deleted every hour.
    with gr.Blocks(title="科协问答", delete_cache=(3600, 86400)) as demo:
        demo.kexie_owners = page.owners  # the Gate (rag/serve/guard.py) checks every file request against them
        gr.Markdown("## 科协问答\n依据知识库中的报告与政策文件回答问题，每句话都标注出处，可点击 [n] 查看原文段落。")
        choices = Choices(settings)
        with gr.Tabs():
            with gr.Tab("问答", id="chat"):
                choices.status_line()
                with gr.Row():
                    with gr.Column(scale=1, min_width=220, elem_id="side-col"):
                        side = conversations.Conversations(page)
                    with gr.Column(scale=3, elem_id="chat-col"):
                        talk = chat.Chat(page, choices.opts)
                    with gr.Column(scale=2, elem_id="cites-col"):
                        talk.sources()
            with gr.Tab("知识库", id="kb"):
                kbs = bases.Bases(page)
                chunks = passages.ChunkView(page)
                kbs.recycle_bin()
                hits = passages.HitTest(page)
            feedback.Tab(page)
            eval_tab(settings, page.registry, user_of, page.owners, page.exports)
            choices.tab()

        talk.wire(side.conv_pick)
        side.wire(talk)
        kbs.wire(chunks.chunk_doc, talk.kb_pick)
        chunks.wire(kbs.kb_manage)
        hits.wire(kbs.kb_manage)
        demo.load(side.on_load, None, [side.conv_pick, talk.kb_pick, kbs.kb_manage, side.who])
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
