"""问答: the question box, the answers as they stream, and every answer's sources beside them."""

from __future__ import annotations

import logging

import gradio as gr

from rag.models import CLOSEST
from rag.serve.chat import Options, ask_stream
from rag.serve.faq_panel import render_faq
from rag.serve.history import NotFound
from rag.serve.kbs import KBError
from rag.serve.render import (
    EMPTY_CITES,
    answer_cards,
    answer_markdown,
    hit_card,
    render_cards,
    render_panel,
    turn_marker,
    with_links,
)
from rag.serve.tabs import feedback
from rag.serve.tabs.page import BUSY, READY, Page, user_of

log = logging.getLogger("kexie.web")

EXAMPLES = ["什么是四服务一加强", "青岛市科协组建了多少支科技志愿服务队", "聊城市科普大篷车开进了哪些地方", "连云港市科协2017年开展了哪些学术活动"]


def new_chat():
    """A new conversation: nothing of the last one stays (its hidden history and sources included)."""
    return [], [], EMPTY_CITES, gr.update(value="", **READY), "", [], gr.update(value=None), [], "", gr.update()


class Chat:
    """The chat column (call inside it) and the open conversation's state; `sources` draws the sources column."""

    def __init__(self, page: Page, opts: gr.State):
        self.page, self.opts = page, opts
        self.history = gr.State([])
        self.conv = gr.State("")
        self.turn_ids = gr.State([])
        self.panel = gr.State([])  # [turn, question, cards html] for every answer of the conversation
        self.kb_pick = gr.Dropdown([], multiselect=True, label="知识库（可多选，结果跨库融合）", elem_id="kb-pick")
        self.chatbot = gr.Chatbot(label="对话", height=480, elem_id="chatbot", feedback_options=("Like", "Dislike"))
        self.feedback = feedback.Form(page)
        self.box = gr.Textbox(label="问题", elem_id="question", **READY)
        with gr.Row():
            self.send = gr.Button("发送", variant="primary", elem_id="send")
            self.clear_btn = gr.Button("清空对话", elem_id="clear")
        gr.Examples(EXAMPLES, inputs=self.box, label="示例问题")

    def sources(self) -> None:
        gr.Markdown("### 引用出处")
        self.cites = gr.HTML(EMPTY_CITES, elem_id="citations")

    def outputs(self, conv_pick) -> list:
        """What an answer, and every change of conversation, redraws."""
        return [self.chatbot, self.history, self.cites, self.box, self.conv, self.turn_ids, conv_pick, self.panel]

    def wire(self, conv_pick) -> None:
        ask_in = [self.box, self.chatbot, self.history, self.opts, self.conv, self.turn_ids, self.kb_pick, self.panel]
        self.box.submit(self.respond, ask_in, self.outputs(conv_pick))
        self.send.click(self.respond, ask_in, self.outputs(conv_pick))
        self.feedback.wire(self.chatbot, self.turn_ids)

    def respond(self, message, chat, history, opts, conv, turn_ids, picked, panel, request: gr.Request):
        page, saved = self.page, self.page.saved
        message = (message or "").strip()
        user, own = user_of(request), page.owner(request)
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
            reply = None
            for reply in ask_stream(page.registry, user, picked or [], message, history, Options.chosen(page.settings, opts)):
                if reply.fused is None:  # one base: the answer as it streams
                    chat[-1]["content"] = answer_markdown(reply.answer.answer, turn) or "正在生成回答…"
                    yield chat, history, gr.update(), busy, conv, turn_ids, gr.update(), panel
        except KBError as e:
            chat[-1]["content"] = f"无法回答：{e}"
            yield chat, history, gr.update(), gr.update(**READY), conv, turn_ids + [None], gr.update(), panel
            return
        except Exception as e:  # the page must stay usable; no internals or secrets in the message
            log.exception("answer failed")
            chat[-1]["content"] = f"出错了：{type(e).__name__}。请稍后再试或联系管理员。"
            yield chat, history, gr.update(), gr.update(**READY), conv, turn_ids + [None], gr.update(), panel
            return
        assert reply is not None
        final, base, bases, fused = reply.answer, reply.base, reply.bases, reply.fused
        text = answer_markdown(final.answer, turn)
        if final.notice:
            text += "\n\n> " + answer_markdown(final.notice)
        health = page.registry.assistant(base).retriever.health  # a damaged index never answers silently
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
        cards = with_links(cards, base.name, {b.name: page.linker(user, b) for b in bases})
        panel = panel + [[turn, message, render_cards(cards, final.refused, final.generation, render_faq(final.faq), turn)]]
        yield (chat, history, render_panel(panel), gr.update(value="", **READY), conv, turn_ids,
               gr.update(choices=page.conv_choices(own), value=conv), panel)
