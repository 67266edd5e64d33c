"""知识库: create, rename, delete a base; upload, re-index and delete its documents; the recycle bin."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from rag.serve import kb, recycle
from rag.serve.faq_panel import faq_section
from rag.serve.kbs import DEFAULT_ID, KBError
from rag.serve.render import md_text
from rag.serve.tabs.page import Page, confirm_box, user_of
from rag.settings import Settings


def _doc_table(settings: Settings) -> list[list]:
    return [[r.source, r.status, r.chunks, f"{r.size / 1024:.1f} KB", r.indexed_at, r.version, r.effective, r.reason]
            for r in kb.list_documents(settings)]


def handlers(page: Page) -> SimpleNamespace:
    """The tab's handlers, over the page's bases and this user's rights."""
    settings, registry, quota, managed = page.settings, page.registry, page.quota, page.managed
    kb_choices, kb_lists = page.kb_choices, page.kb_lists

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


    return SimpleNamespace(**{k: v for k, v in locals().items() if callable(v)})


class Bases:
    """The base and its documents (call inside the 知识库 tab); `recycle_bin` draws the bin below them."""

    def __init__(self, page: Page):
        self.h = handlers(page)
        settings = page.settings
        with gr.Row():
            self.kb_manage = gr.Dropdown([], label="管理的知识库", elem_id="kb-manage")
            self.kb_new_name = gr.Textbox(label="名称（新建或重命名）", elem_id="kb-name")
            self.kb_create_btn = gr.Button("新建知识库", elem_id="kb-create")
            self.kb_rename_btn = gr.Button("重命名", elem_id="kb-rename")
            self.kb_delete_btn = gr.Button("删除知识库", variant="stop", elem_id="kb-delete")
        self.ok_kb = confirm_box("confirm-kb")
        self.kb_info = gr.Markdown(elem_id="kb-info")
        # No file_types: Gradio's own check answers in English ("Invalid file type"); the upload
        # handler refuses other types in Chinese, naming the supported ones (rag/serve/kb.py).
        self.files = gr.File(label=f"上传文档（{' / '.join(t.lstrip('.') for t in kb.upload_types(settings))}，可多选）",
                             file_count="multiple", elem_id="upload")
        with gr.Row():
            self.upload_btn = gr.Button("上传并索引", variant="primary", elem_id="upload-btn")
            self.reindex_btn = gr.Button("重新索引（增量）", elem_id="reindex-btn")
        self.kb_msg = gr.Markdown(elem_id="kb-msg")
        self.vec_msg = gr.Markdown(elem_id="vector-status")
        self.table = gr.Dataframe([], headers=["文档", "状态", "段落数", "大小", "索引时间", "版本", "施行日期", "说明"],
                                  interactive=False, elem_id="doc-table")
        with gr.Row():
            self.pick = gr.Dropdown([], label="选择文档", elem_id="delete-pick")
            self.del_btn = gr.Button("删除所选文档", variant="stop", elem_id="delete-btn")
        self.ok_doc = confirm_box("confirm-doc")
        self.faq_sec = faq_section(lambda name, request: page.managed(name, request, change=True)[1], self.kb_manage)

    def recycle_bin(self) -> None:
        with gr.Accordion(f"回收站（删除的知识库与文档保留 {recycle.KEEP_DAYS} 天）", open=False, elem_id="recycle") as self.bin_acc:
            self.bin_table = gr.Dataframe([], headers=["类型", "名称", "所在知识库", "删除人", "删除时间", "剩余"], interactive=False,
                                          elem_id="recycle-table")
            with gr.Row():
                self.bin_pick = gr.Dropdown([], label="选择要恢复的项", elem_id="recycle-pick")
                self.bin_restore = gr.Button("恢复", elem_id="recycle-restore")

    def wire(self, chunk_doc, kb_pick) -> None:
        """`chunk_doc`: the chunk view's document list (it follows the base); `kb_pick`: the chat's bases."""
        h, kb_manage, kb_msg, faq_sec, ok_doc, ok_kb = self.h, self.kb_manage, self.kb_msg, self.faq_sec, self.ok_doc, self.ok_kb
        table, pick = self.table, self.pick
        kb_outs = [table, pick, chunk_doc, self.kb_info]
        kb_manage.change(h.kb_view, kb_manage, kb_outs)
        kb_manage.change(faq_sec.refresh, faq_sec.refresh_inputs, faq_sec.refresh_outputs)
        self.upload_btn.click(h.upload, [kb_manage, self.files], [kb_msg, table, pick, chunk_doc, self.files])
        self.reindex_btn.click(h.do_reindex, kb_manage, [kb_msg, table, pick, chunk_doc])
        gr.Timer(5).tick(h.vector_status, kb_manage, self.vec_msg)  # 向量索引 63%，预计 41 分钟
        kb_manage.change(h.vector_status, kb_manage, self.vec_msg)
        bin_outs = [self.bin_table, self.bin_pick]
        self.del_btn.click(h.ask_delete_doc, [kb_manage, pick], [ok_doc.box, ok_doc.text, ok_doc.target, kb_msg])
        ok_doc.yes.click(h.delete, [ok_doc.target], [kb_msg, table, pick, chunk_doc]).then(
            ok_doc.close, None, ok_doc.outputs).then(h.recycle_view, None, bin_outs)
        self.bin_acc.expand(h.recycle_view, None, bin_outs)
        self.bin_restore.click(h.restore, [self.bin_pick], [kb_msg, kb_manage, kb_pick, *bin_outs])
        self.kb_create_btn.click(h.kb_create, self.kb_new_name, [kb_msg, kb_manage, kb_pick])
        self.kb_rename_btn.click(h.kb_rename, [kb_manage, self.kb_new_name], [kb_msg, kb_manage, kb_pick])
        self.kb_delete_btn.click(h.ask_delete_kb, kb_manage, [ok_kb.box, ok_kb.text, ok_kb.target, kb_msg])
        ok_kb.yes.click(h.kb_delete, [ok_kb.target], [kb_msg, kb_manage, kb_pick]).then(
            ok_kb.close, None, ok_kb.outputs).then(h.recycle_view, None, bin_outs)
