"""Gradio web chat: streamed answers, clickable citation cards, knowledge-base management, settings."""

from __future__ import annotations

import dataclasses
import html
import logging
import os
import re
import threading
from pathlib import Path
from urllib.parse import quote

import gradio as gr

from rag.answer.assistant import Assistant
from rag.index.indexer import reindex_live
from rag.ingest import tables
from rag.models import Answer, Backend, RetrievalMode
from rag.serve import kb
from rag.settings import Settings

log = logging.getLogger("kexie.web")

EXAMPLES = ["什么是四服务一加强", "青岛市科协组建了多少支科技志愿服务队", "聊城市科普大篷车开进了哪些地方", "连云港市科协2017年开展了哪些学术活动"]
BACKENDS = {"离线抽取（默认）": Backend.EXTRACTIVE.value, "OpenAI 兼容接口": Backend.OPENAI.value, "本地 GGUF 模型": Backend.LLAMACPP.value}
MODES = {"混合检索": RetrievalMode.HYBRID.value, "仅 BM25": RetrievalMode.BM25.value, "仅向量": RetrievalMode.VECTOR.value}

CSS = """
.cite-card {border:1px solid #d0d7de; border-radius:8px; padding:10px 12px; margin:8px 0; background:#fafbfc;}
.cite-card.flash {outline:3px solid #f0b429;}
.cite-head {font-weight:600; margin-bottom:4px;}
.cite-meta {color:#57606a; font-size:0.9em; margin-bottom:6px;}
.cite-text {white-space:pre-wrap; line-height:1.6;}
.cite-text mark {background:#fff3b0; padding:0 1px;}
.cite-table {border-collapse:collapse; white-space:normal; margin:4px 0; font-size:0.92em;}
.cite-table th, .cite-table td {border:1px solid #d0d7de; padding:3px 6px; vertical-align:top;}
.cite-table th {background:#f6f8fa;}
.cite-table tr.marked td {background:#fff3b0;}
.superseded {color:#9a6700;}
.cite-link {text-decoration:none; font-weight:600;}
.refused-note {color:#9a6700; margin-bottom:6px;}
"""

# Clicking [n] in an answer scrolls its card into view (Gradio renders answers as sanitised HTML).
HEAD = """<script>
document.addEventListener('click', function (e) {
  const a = e.target.closest('a');
  if (!a) return;
  const m = (a.getAttribute('href') || '').match(/^#cite-(\\d+)$/);
  if (!m) return;
  e.preventDefault();
  const card = document.getElementById('cite-' + m[1]);
  if (card) { card.scrollIntoView({behavior: 'smooth', block: 'center'});
              card.classList.add('flash'); setTimeout(() => card.classList.remove('flash'), 1500); }
}, true);
</script>"""


def file_url(settings: Settings, source: str) -> str:
    path = kb.resolve_in_corpus(settings, source)
    return "/gradio_api/file=" + quote(str(path))


def endpoint_settings(settings: Settings, base_url: str, model: str, api_key: str) -> Settings:
    """Settings for an endpoint typed in the page. The configured API key goes only to the configured
    endpoint: a typed URL gets the key typed with it, or none."""
    url = (base_url or "").strip() or settings.llm_base_url
    same = url.rstrip("/") == settings.llm_base_url.rstrip("/")
    key = (api_key or "").strip() or (settings.llm_api_key if same else "")
    return dataclasses.replace(settings, llm_base_url=url, llm_model=(model or "").strip() or settings.llm_model,
                               llm_api_key=key)


def linkify(answer: str) -> str:
    return re.sub(r"\[(\d+)\]", r"[[\1]](#cite-\1)", answer)


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


def render_citations(settings: Settings, a: Answer | None) -> str:
    if a is None:
        return "<div class='cite-empty'>回答的引用出处会显示在这里。</div>"
    cards = []
    if a.refused:
        cards.append("<div class='refused-note'>资料中未找到答案。以下是最接近的段落：</div>")
        items = [(h.rank, h.chunk.source, h.chunk.page, h.chunk.heading, h.chunk.text, [], [], h.chunk.ocr, h.label, h.note)
                 for h in a.retrieved[:3]]
    else:
        by_text = {h.chunk.text: h for h in a.retrieved}
        items = [(c.n, c.source, c.page, c.heading, c.text, c.support, c.spans,
                  by_text[c.text].chunk.ocr if c.text in by_text else False, c.label,
                  by_text[c.text].note if c.text in by_text else "") for c in a.citations]
    for n, source, page, heading, text, support, spans, is_ocr, label, note in items:
        meta = []
        if label:
            meta.append(f"<b>{html.escape(label)}</b>")
        if note:
            meta.append(f"<span class='superseded'>{html.escape(note.strip('（）'))}</span>")
        if page:
            meta.append(f"第 {page} 页" + ("（OCR 识别）" if is_ocr else ""))
        if heading:
            meta.append(html.escape(heading))
        try:
            link = f"<a href='{file_url(settings, source)}' target='_blank' download>打开原文</a>"
        except kb.UploadRejected:
            link = ""
        cards.append(
            f"<div class='cite-card' id='cite-{n}'><div class='cite-head'>[{n}] {html.escape(source)} {link}</div>"
            f"<div class='cite-meta'>{' · '.join(meta)}</div>"
            f"<div class='cite-text'>{_table_html(text, spans) if _is_table(text) else _highlight(text, support, spans)}</div></div>"
        )
    # The generation lets load tests check each answer against the index it was served from.
    return f"<div class='cite-list' data-generation='{html.escape(a.generation)}'>" + "\n".join(cards) + "</div>"


def _doc_table(settings: Settings) -> list[list]:
    return [[r.source, r.status, r.chunks, f"{r.size / 1024:.1f} KB", r.indexed_at, r.version, r.effective, r.reason]
            for r in kb.list_documents(settings)]


def build_app(settings: Settings, assistant: Assistant | None = None) -> gr.Blocks:
    assistant = assistant or Assistant(settings)
    index_lock = threading.Lock()  # one re-index at a time from the UI; chats keep reading meanwhile

    def respond(message: str, chat: list, history: list, opts: dict):
        message = (message or "").strip()
        if not message:
            yield chat, history, gr.update(), ""
            return
        chat = chat + [{"role": "user", "content": message}, {"role": "assistant", "content": "正在检索资料…"}]
        yield chat, history, gr.update(), ""
        llm = endpoint_settings(settings, opts.get("base_url", ""), opts.get("model", ""), opts.get("api_key", ""))
        final = None
        try:
            for final in assistant.ask_stream(message, history, opts.get("backend"), opts.get("k"), opts.get("mode"), llm):
                chat[-1]["content"] = linkify(final.answer) or "正在生成回答…"
                yield chat, history, gr.update(), ""
        except Exception as e:  # the page must stay usable; no internals or secrets in the message
            log.exception("answer failed")
            chat[-1]["content"] = f"出错了：{type(e).__name__}。请稍后再试或联系管理员。"
            yield chat, history, gr.update(), ""
            return
        assert final is not None
        text = linkify(final.answer)
        if final.notice:
            text += f"\n\n> {final.notice}"
        chat[-1]["content"] = text
        history = history + [(message, final.answer)]
        yield chat, history, render_citations(settings, final), ""

    def clear():
        return [], [], render_citations(settings, None), ""

    def reindex(progress=gr.Progress()):
        with index_lock:
            # Returns once the chat answers from the new generation, so "done" means searchable.
            rep = reindex_live(assistant.retriever, lambda stage, done, total: progress(done / max(total, 1), desc=stage))
        lines = [f"索引完成：新增 {len(rep.added)}，修改 {len(rep.changed)}，删除 {len(rep.removed)}，"
                 f"失败 {len(rep.failed)}，共 {rep.chunks} 个段落，用时 {rep.seconds:.1f} 秒。"]
        lines += [f"- 失败：{s}（{r}）" for s, r in rep.failed.items()]
        lines += [f"- 跳过：{s}（{r}）" for s, r in rep.skipped.items()]
        lines += [f"- 注意：{s}（{'；'.join(n)}）" for s, n in rep.warned.items()]
        return "\n".join(lines)

    def upload(files, progress=gr.Progress()):
        msgs = []
        for f in files or []:
            path = Path(f if isinstance(f, str) else f.name)
            try:
                msgs.append(kb.save_upload(settings, path, path.name).message)
            except kb.UploadRejected as e:
                msgs.append(f"已拒绝：{e}")
        msgs.append(reindex(progress))
        return "\n".join(msgs), _doc_table(settings), gr.update(choices=_sources())

    def delete(source, progress=gr.Progress()):
        if not source:
            return "请先选择要删除的文档。", _doc_table(settings), gr.update()
        try:
            kb.delete_document(settings, source)
        except kb.UploadRejected as e:
            return f"删除失败：{e}", _doc_table(settings), gr.update(choices=_sources())
        msg = f"已删除：{source}\n" + reindex(progress)
        return msg, _doc_table(settings), gr.update(choices=_sources(), value=None)

    def do_reindex(progress=gr.Progress()):
        return reindex(progress), _doc_table(settings), gr.update(choices=_sources())

    def _sources():
        return [r.source for r in kb.list_documents(settings)]

    def save_opts(k, mode, backend, base_url, model, api_key):
        opts = {"k": int(k), "mode": MODES[mode], "backend": BACKENDS[backend], "base_url": base_url, "model": model, "api_key": api_key}
        return opts, f"当前回答后端：**{backend}** · 检索：{mode} · top-k {int(k)}"

    default_backend = next((k for k, v in BACKENDS.items() if v == settings.answer_backend), "离线抽取（默认）")
    default_mode = next((k for k, v in MODES.items() if v == settings.retrieval_mode), "混合检索")
    with gr.Blocks(title="科协问答") as demo:
        gr.Markdown("## 科协问答\n依据知识库中的报告与政策文件回答问题，每句话都标注出处，可点击 [n] 查看原文段落。")
        opts = gr.State({"k": settings.top_k, "mode": settings.retrieval_mode, "backend": settings.answer_backend,
                         "base_url": settings.llm_base_url, "model": settings.llm_model, "api_key": ""})
        history = gr.State([])
        with gr.Tabs():
            with gr.Tab("问答", id="chat"):
                status = gr.Markdown(f"当前回答后端：**{default_backend}** · 检索：{default_mode} · top-k {settings.top_k}",
                                     elem_id="backend-status")
                with gr.Row():
                    with gr.Column(scale=3):
                        chatbot = gr.Chatbot(label="对话", height=480, elem_id="chatbot")
                        box = gr.Textbox(placeholder="请输入问题，例如：什么是四服务一加强", label="问题", elem_id="question")
                        with gr.Row():
                            send = gr.Button("发送", variant="primary", elem_id="send")
                            clear_btn = gr.Button("清空对话", elem_id="clear")
                        gr.Examples(EXAMPLES, inputs=box, label="示例问题")
                    with gr.Column(scale=2):
                        gr.Markdown("### 引用出处")
                        cites = gr.HTML(render_citations(settings, None), elem_id="citations")
            with gr.Tab("知识库", id="kb"):
                files = gr.File(label="上传文档（txt / md / pdf / docx，可多选）", file_count="multiple",
                                file_types=list(settings.upload_extensions), elem_id="upload")
                with gr.Row():
                    upload_btn = gr.Button("上传并索引", variant="primary", elem_id="upload-btn")
                    reindex_btn = gr.Button("重新索引（增量）", elem_id="reindex-btn")
                kb_msg = gr.Markdown(elem_id="kb-msg")
                table = gr.Dataframe(_doc_table(settings), headers=["文档", "状态", "段落数", "大小", "索引时间", "版本", "施行日期", "说明"],
                                     interactive=False, elem_id="doc-table")
                with gr.Row():
                    pick = gr.Dropdown(choices=_sources(), label="选择文档", elem_id="delete-pick")
                    del_btn = gr.Button("删除所选文档", variant="stop", elem_id="delete-btn")
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

        outs = [chatbot, history, cites, box]
        box.submit(respond, [box, chatbot, history, opts], outs)
        send.click(respond, [box, chatbot, history, opts], outs)
        clear_btn.click(clear, None, outs)
        upload_btn.click(upload, files, [kb_msg, table, pick])
        reindex_btn.click(do_reindex, None, [kb_msg, table, pick])
        del_btn.click(delete, pick, [kb_msg, table, pick])
        apply.click(save_opts, [k, mode, backend, base_url, model, api_key], [opts, status])
    return demo


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


def launch(settings: Settings, demo: gr.Blocks, block: bool = True):
    auth = (settings.auth_user, settings.auth_password) if settings.auth_user else None
    demo.queue(default_concurrency_limit=8)
    host, port = server_address(settings)
    return demo.launch(
        server_name=host,
        server_port=port,
        auth=auth,
        allowed_paths=[str(settings.corpus_dir.resolve())],
        max_file_size=f"{settings.max_upload_mb}mb",
        css=CSS,
        head=HEAD,
        show_error=False,
        prevent_thread_lock=not block,
        quiet=True,
    )
