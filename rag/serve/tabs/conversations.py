"""The conversation list beside the chat: new, open, rename, delete, export as Markdown or Word."""

from __future__ import annotations

import uuid

import gradio as gr

from rag.serve import export, kb
from rag.serve.faq_panel import render_faq
from rag.serve.guard import protect_output
from rag.serve.history import NotFound
from rag.serve.kbs import KBError
from rag.serve.render import answer_markdown, md_text, render_cards, render_panel, turn_cards, turn_marker, with_links
from rag.serve.tabs.chat import Chat, new_chat
from rag.serve.tabs.page import READY, Page, confirm_box, user_of


class Conversations:
    """The side column (call inside it)."""

    def __init__(self, page: Page):
        self.page = page
        self.who = gr.Markdown(elem_id="who")
        self.new_btn = gr.Button("＋ 新对话", elem_id="new-chat")
        self.conv_pick = gr.Radio([], label="对话记录", elem_id="conv-list")
        self.conv_title = gr.Textbox(label="对话标题", elem_id="conv-title")
        with gr.Row():
            self.rename_btn = gr.Button("重命名", size="sm", elem_id="conv-rename")
            self.del_conv_btn = gr.Button("删除", size="sm", variant="stop", elem_id="conv-delete")
        self.ok_conv = confirm_box("confirm-conv")
        with gr.Row():
            self.md_btn = gr.Button("导出 Markdown", size="sm", elem_id="conv-export-md")
            self.docx_btn = gr.Button("导出 Word", size="sm", elem_id="conv-export-docx")
        self.conv_file = protect_output(gr.File(label="导出文件", interactive=False, elem_id="conv-file"), page.owners)
        self.conv_msg = gr.Markdown(elem_id="conv-msg")

    def wire(self, chat: Chat) -> None:
        conv, ok_conv, conv_msg = chat.conv, self.ok_conv, self.conv_msg
        conv_outs = [*chat.outputs(self.conv_pick), self.conv_title, chat.kb_pick]
        chat.clear_btn.click(new_chat, None, conv_outs)
        chat.chatbot.clear(new_chat, None, conv_outs)  # the chat's own 🗑 starts a new conversation too
        self.new_btn.click(new_chat, None, conv_outs)
        self.conv_pick.input(self.open_conv, [self.conv_pick], conv_outs)
        self.rename_btn.click(self.rename_conv, [conv, self.conv_title], [self.conv_pick, conv_msg])
        self.del_conv_btn.click(self.ask_delete_conv, [conv], [ok_conv.box, ok_conv.text, ok_conv.target, conv_msg])
        ok_conv.yes.click(self.delete_conv, [ok_conv.target], conv_outs).then(ok_conv.close, None, ok_conv.outputs)
        self.md_btn.click(self.export_md, [conv], [self.conv_file, conv_msg])
        self.docx_btn.click(self.export_docx, [conv], [self.conv_file, conv_msg])

    def on_load(self, request: gr.Request):  # the name is the page API endpoint (/on_load) gradio_client callers use
        """The page opened: this user's conversations and bases, and who they are."""
        page = self.page
        own = page.owner(request)
        choices = page.kb_choices(request)
        who = user_of(request)
        greet = f"当前用户：**{who}**" if who else "未启用登录：对话记录保存在本浏览器对应的服务器端存储中。"
        first = [i for _, i in choices][:1]
        return (gr.update(choices=page.conv_choices(own), value=None), gr.update(choices=choices, value=first),
                gr.update(choices=choices, value=first[0] if first else None), greet)

    def open_conv(self, cid, request: gr.Request):
        page, saved, registry = self.page, self.page.saved, self.page.registry
        own, user = page.owner(request), user_of(request)
        if not cid:
            return new_chat()
        try:
            conv, turns = saved.get(own, cid), saved.turns(own, cid)
        except NotFound:
            return (*new_chat()[:6], gr.update(choices=page.conv_choices(own), value=None), [], "", gr.update())
        chat, history, panel, links = [], [], [], {}
        for k, t in enumerate(turns, 1):
            text = answer_markdown(t.answer, k) + ("\n\n> " + answer_markdown(t.notice) if t.notice else "")
            chat += [{"role": "user", "content": t.question},
                     {"role": "assistant", "content": text + "\n\n" + turn_marker(t.id)}]
            history.append((t.question, t.answer))
            if t.kb not in links:
                try:
                    links[t.kb] = page.linker(user, registry.get(t.kb, user))
                except KBError:  # the base was deleted or the grant withdrawn: the cards, without links
                    links[t.kb] = None
            cards = with_links(turn_cards(t), t.kb, {t.kb: links[t.kb]} if links[t.kb] else {})
            panel.append([k, t.question, render_cards(cards, t.refused, t.generation, render_faq(t.faq), k)])
        # Follow-ups go to the bases the conversation asked, where this user may still read them.
        ids = {b.name: b.id for b in registry.visible(user)}
        picked = [ids[n] for n in conv.kbs if n in ids]
        return (chat, history, render_panel(panel), gr.update(value="", **READY), cid, [t.id for t in turns],
                gr.update(), panel, conv.title, gr.update(value=picked) if picked else gr.update())

    def rename_conv(self, cid, title, request: gr.Request):
        page = self.page
        own = page.owner(request)
        if not cid:
            return gr.update(), "请先打开一个对话。"
        try:
            page.saved.rename(own, cid, title)
        except NotFound:
            return gr.update(choices=page.conv_choices(own), value=None), "这个对话已被删除。"
        return gr.update(choices=page.conv_choices(own), value=cid), "已重命名。"

    def ask_delete_conv(self, cid, request: gr.Request):
        saved = self.page.saved
        own = self.page.owner(request)
        try:
            c, n = saved.get(own, cid), len(saved.turns(own, cid))
        except NotFound:
            return gr.update(visible=False), "", None, "请先打开一个对话。"
        return gr.update(visible=True), f"确认删除对话 **{md_text(c.title)}**（{n} 问）？删除后无法恢复。", cid, ""

    def delete_conv(self, cid, request: gr.Request):
        own = self.page.owner(request)
        if cid:
            try:
                self.page.saved.delete(own, cid)
            except NotFound:
                pass
        return (*new_chat()[:6], gr.update(choices=self.page.conv_choices(own), value=None), [], "", gr.update())

    def export_conv(self, cid, fmt, request: gr.Request):
        saved = self.page.saved
        own = self.page.owner(request)
        if not cid:
            return None, "请先打开一个对话。"
        try:
            conv, turns = saved.get(own, cid), saved.turns(own, cid)
        except NotFound:
            return None, "这个对话已被删除。"
        folder = self.page.exports / uuid.uuid4().hex[:8]
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
        return self.page.made_for(request, path), f"已导出：{path.name}"

    def export_md(self, cid, request: gr.Request):
        return self.export_conv(cid, "md", request)

    def export_docx(self, cid, request: gr.Request):
        return self.export_conv(cid, "docx", request)
