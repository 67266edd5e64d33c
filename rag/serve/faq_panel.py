"""Gradio pieces for curated Q&A pairs (标准答案): upload, table, edit/delete, and the citation card.

`faq_section` is called inside the 知识库 tab's `gr.Blocks` context; the handlers are plain functions of
a Settings object (tested without a browser)."""

from __future__ import annotations

import html
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from rag.answer import faq
from rag.settings import Settings

HEADERS = ["问题", "标准答案", "文件", "行"]
FAQ_CSS = """
.faq-card {border:1px solid #1f883d; border-left:4px solid #1f883d; border-radius:8px; padding:10px 12px; margin:8px 0;
           background:#f6fff8; color:#1f2328;}
.dark .faq-card {background:rgba(46,160,67,0.15); color:var(--body-text-color);}
.faq-card .faq-head {font-weight:600; color:#1a7f37; margin-bottom:4px;}
.faq-card .faq-q {color:var(--body-text-color-subdued); margin-bottom:4px;}
.faq-card .faq-a {white-space:pre-wrap; line-height:1.6;}
.faq-card .faq-src {color:var(--body-text-color-subdued); font-size:0.9em; margin-top:6px;}
"""


def render_faq(match) -> str:
    """The 标准答案 card above the citation cards; `match` is a FaqMatch or its to_json() dict (saved turns)."""
    if not match:
        return ""
    if isinstance(match, dict):
        q, a, file, row, score = match.get("question", ""), match.get("answer", ""), match.get("source", ""), \
            match.get("row", ""), match.get("score")
    else:
        q, a, file, row, score = match.question, match.answer, match.file, match.row, match.score
    sim = f" · 相似度 {float(score):.2f}" if score is not None else ""
    return (f"<div class='faq-card'><div class='faq-head'>标准答案</div>"
            f"<div class='faq-q'>问：{html.escape(q)}</div><div class='faq-a'>{html.escape(a)}</div>"
            f"<div class='faq-src'>{html.escape(str(file))} 第 {html.escape(str(row))} 行{sim}</div></div>")


# -- handlers (Settings in, values out) -----------------------------------------------------------
def pair_rows(s: Settings) -> tuple[list[list], list[tuple[str, str]], str]:
    """Table rows, the pick list (label, key) and a note naming the files left out."""
    pairs, errors = faq.load_pairs(s.faq_root)
    rows = [[p.question, p.answer, p.file, p.row] for p in pairs]
    choices = [(f"{p.file} 第 {p.row} 行：{p.question[:30]}", p.key) for p in pairs]
    note = f"共 {len(pairs)} 个标准问答。" if pairs else "还没有标准问答：上传 CSV / XLSX / JSONL（列：question、answer）。"
    if errors:
        note += "\n" + "\n".join(f"- 未载入：{e}" for e in errors.values())
    return rows, choices, note


def upload_files(s: Settings, paths: list[Path], names: list[str] | None = None) -> str:
    """Each file validated with the shared loader and copied into the FAQ folder, or rejected with the reason."""
    msgs = []
    for i, p in enumerate(paths):
        name = names[i] if names else Path(p).name
        try:
            msgs.append(faq.import_file(s.faq_root, Path(p), name))
        except faq.FaqFileError as e:
            msgs.append(f"已拒绝：{e}")
    return "\n".join(msgs) or "请先选择文件。"


def save(s: Settings, key: str | None, question: str, answer: str) -> str:
    try:
        if key:
            p = faq.save_pair(s.faq_root, key, question, answer)
            return f"已保存：{p.where}"
        p = faq.add_pair(s.faq_root, question, answer)
        return f"已新增：{p.where}"
    except faq.FaqFileError as e:
        return f"保存失败：{e}"


def delete(s: Settings, key: str | None) -> str:
    if not key:
        return "请先选择要删除的问答。"
    try:
        p = faq.delete_pair(s.faq_root, key)
    except faq.FaqFileError as e:
        return f"删除失败：{e}"
    return f"已删除：{p.where}：{p.question}"


def question_of(s: Settings, key: str | None) -> tuple[str, str]:
    if not key:
        return "", ""
    for p in faq.load_pairs(s.faq_root)[0]:
        if p.key == key:
            return p.question, p.answer
    return "", ""


# -- the section ---------------------------------------------------------------------------------
@dataclass
class FaqSection:
    upload: gr.File
    upload_btn: gr.Button
    table: gr.Dataframe
    pick: gr.Dropdown
    question: gr.Textbox
    answer: gr.Textbox
    save: gr.Button
    delete: gr.Button
    msg: gr.Markdown
    refresh: Callable  # event handler: kb.change(sec.refresh, sec.refresh_inputs, sec.refresh_outputs)
    refresh_inputs: list
    refresh_outputs: list


def _caller(get_settings: Callable) -> Callable[[object, object], Settings]:
    """get_settings() or get_settings(kb name, request): whichever it takes."""
    n = len(inspect.signature(get_settings).parameters)
    return (lambda name, request: get_settings()) if n == 0 else (lambda name, request: get_settings(name, request))


def faq_section(get_settings: Callable, kb: gr.components.Component | None = None) -> FaqSection:
    """The 标准问答 block; `kb` is the knowledge-base dropdown passed to `get_settings(name, request)`."""
    settings_of = _caller(get_settings)

    with gr.Accordion("标准问答（FAQ）", open=False, elem_id="faq-section"):
        gr.Markdown("与标准问题足够相似的提问先给出标准答案（注明来源文件与行号），再给出资料中的引用。")
        upload = gr.File(label="上传标准问答（CSV / XLSX / JSONL，列：question、answer，可选 id、evidence、source）",
                         file_count="multiple", file_types=[".csv", ".xlsx", ".jsonl", ".json"], elem_id="faq-upload")
        upload_btn = gr.Button("上传标准问答", variant="primary", elem_id="faq-upload-btn")
        table = gr.Dataframe([], headers=HEADERS, interactive=False, wrap=True, elem_id="faq-table")
        pick = gr.Dropdown([], label="选择问答（不选则新增一条）", elem_id="faq-pick")
        question = gr.Textbox(label="问题", elem_id="faq-question")
        answer = gr.Textbox(label="标准答案", lines=3, elem_id="faq-answer")
        with gr.Row():
            save_btn = gr.Button("保存", variant="primary", elem_id="faq-save")
            delete_btn = gr.Button("删除", variant="stop", elem_id="faq-delete")
        msg = gr.Markdown(elem_id="faq-msg")
    kb_in = kb if kb is not None else gr.State(None)

    def settings_or_error(name, request):
        try:
            return settings_of(name, request), ""
        except Exception as e:  # KBError: not granted, removed meanwhile
            return None, f"{e}"

    def view(s: Settings | None, note: str = ""):
        if s is None:
            return [], gr.update(choices=[], value=None), note
        rows, choices, listing = pair_rows(s)
        return rows, gr.update(choices=choices, value=None), "\n\n".join(x for x in (note, listing) if x)

    def refresh(name, request: gr.Request):
        return view(*settings_or_error(name, request))

    def on_upload(name, files, request: gr.Request):
        s, err = settings_or_error(name, request)
        if s is None:
            return view(None, err)
        paths = [Path(f if isinstance(f, str) else f.name) for f in files or []]
        return view(s, upload_files(s, paths))

    def on_pick(name, key, request: gr.Request):
        s, _ = settings_or_error(name, request)
        return question_of(s, key) if s is not None else ("", "")

    def on_save(name, key, q, a, request: gr.Request):
        s, err = settings_or_error(name, request)
        rows, choices, note = view(s, save(s, key, q, a) if s is not None else err)
        return rows, choices, note, "", ""  # the pick is cleared: a second 保存 must not add a copy

    def on_delete(name, key, request: gr.Request):
        s, err = settings_or_error(name, request)
        rows, choices, note = view(s, delete(s, key) if s is not None else err)
        return rows, choices, note, "", ""

    listing = [table, pick, msg]
    upload_btn.click(on_upload, [kb_in, upload], listing)
    pick.input(on_pick, [kb_in, pick], [question, answer])
    save_btn.click(on_save, [kb_in, pick, question, answer], [*listing, question, answer])
    delete_btn.click(on_delete, [kb_in, pick], [*listing, question, answer])
    return FaqSection(upload, upload_btn, table, pick, question, answer, save_btn, delete_btn, msg, refresh, [kb_in], listing)
