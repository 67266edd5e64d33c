"""Feedback: 👍/👎 under an answer with an optional note and correction, and the 反馈 tab that lists and exports it."""

from __future__ import annotations

import json
import time
import uuid

import gradio as gr

from rag.serve import feedback
from rag.serve.guard import protect_output
from rag.serve.history import NotFound
from rag.serve.render import TURN_LINK
from rag.serve.tabs.page import Page


class Form:
    """The note and correction under the chat (call inside the chat column)."""

    def __init__(self, page: Page):
        self.page = page
        self.pending = gr.State(None)
        with gr.Group(visible=False, elem_id="feedback-form") as self.box:
            self.comment = gr.Textbox(label="说明（可选）", elem_id="fb-comment")
            self.correct = gr.Textbox(label="正确答案（可选，将成为评测题的标准答案）", elem_id="fb-correction")
            self.send = gr.Button("提交反馈", elem_id="fb-submit")
        self.msg = gr.Markdown(elem_id="fb-msg")

    def wire(self, chatbot, turn_ids) -> None:
        chatbot.like(self.on_like, [turn_ids], [self.pending, self.box, self.msg]).then(self.rate_saved, [self.pending], None)
        self.send.click(self.submit_feedback, [self.pending, self.comment, self.correct],
                        [self.box, self.msg, self.comment, self.correct])

    @staticmethod
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

    def rate_saved(self, pending, request: gr.Request):
        if not pending:
            return
        saved, owner = self.page.saved, self.page.owner
        try:
            if pending["rating"]:
                saved.rate(owner(request), pending["turn"], pending["rating"])
            else:
                saved.unrate(owner(request), pending["turn"])
        except NotFound:  # the conversation was deleted in another tab
            pass

    def submit_feedback(self, pending, comment, correction, request: gr.Request):
        if not pending or not pending["rating"]:
            return gr.update(), "请先点击某个回答下方的“有用”或“有误”（赞或踩图标）。", comment, correction
        try:
            self.page.saved.rate(self.page.owner(request), pending["turn"], pending["rating"], comment, correction)
        except NotFound:
            return gr.update(), "这条回答不存在或不属于当前用户。", comment, correction
        return gr.update(visible=False), f"已提交对第 {pending['n']} 个回答的反馈，谢谢！", "", ""


class Tab:
    """The 反馈 tab: everyone's feedback for the admin, one's own otherwise, exported as an eval dataset."""

    def __init__(self, page: Page):
        self.page = page
        with gr.Tab("反馈", id="feedback") as fb_tab:
            only_down = gr.Checkbox(label="只看“有误”", elem_id="fb-only-down")
            fb_table = gr.Dataframe([], headers=["时间", "评价", "问题", "回答", "说明", "正确答案", "知识库"], interactive=False,
                                    wrap=True, elem_id="fb-table")
            with gr.Row():
                fb_refresh = gr.Button("刷新", elem_id="fb-refresh")
                fb_export = gr.Button("导出为评测数据集（JSONL）", elem_id="fb-export")
            fb_file = protect_output(gr.File(label="导出文件", interactive=False, elem_id="fb-file"), page.owners)
            fb_export_msg = gr.Markdown(elem_id="fb-export-msg")
        for ev in (fb_refresh.click, only_down.change, fb_tab.select):  # opening the tab shows the latest
            ev(self.feedback_rows, [only_down], fb_table)
        fb_export.click(self.export_feedback, [only_down], [fb_file, fb_export_msg])

    def feedback_rows(self, only_down, request: gr.Request):
        page = self.page
        own = None if page.is_admin(request) else page.owner(request)
        rows = page.saved.feedback(own, -1 if only_down else None)
        return [[time.strftime("%Y-%m-%d %H:%M", time.localtime(f.created)), "有用" if f.rating > 0 else "有误", f.question,
                 feedback.answer_of(f), f.comment, f.correction, f.kb] for f in rows]

    def export_feedback(self, only_down, request: gr.Request):
        page = self.page
        own = None if page.is_admin(request) else page.owner(request)
        items = page.saved.feedback(own, -1 if only_down else None)
        folder = page.exports / uuid.uuid4().hex[:8]
        n, review = feedback.export(items, folder / "feedback.jsonl")
        return page.made_for(request, folder / "feedback.jsonl"), f"已导出 {n} 条（其中待审核 {review} 条），可在“评测”页或用 kexie eval 运行。"
