"""Inside a knowledge base: its chunks as indexed (with the feedback on answers citing them), and the
retrieval test with each retriever's ranks and scores."""

from __future__ import annotations

import gradio as gr

from rag.answer.assistant import Assistant
from rag.answer.candidates import split_sentences
from rag.answer.instructions import looks_like_instruction
from rag.models import Hit
from rag.serve import feedback
from rag.serve.kbs import KBError
from rag.serve.tabs.page import Page


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



class ChunkView:
    """查看段落 (call inside the 知识库 tab)."""

    def __init__(self, page: Page):
        self.page = page
        with gr.Accordion("查看段落（索引中的分块）", open=False, elem_id="chunk-view"):
            self.chunk_doc = gr.Dropdown([], label="文档", elem_id="chunk-doc")
            self.chunk_table = gr.Dataframe([], headers=["段落 id", "标题路径", "页码", "反馈", "正文"], interactive=False,
                                            wrap=True, column_widths=["12%", "20%", "6%", "8%", "54%"], elem_id="chunk-table")

    def wire(self, kb_manage) -> None:
        self.chunk_doc.change(self.show_chunks, [kb_manage, self.chunk_doc], self.chunk_table)

    def show_chunks(self, name, source, request: gr.Request):
        try:
            base, _, a = self.page.managed(name, request)
        except KBError:
            return []
        # Everyone's feedback: a manager fixes the passages that keep producing rejected answers.
        return chunk_rows(a, source, feedback.passage_counts(self.page.saved.feedback(None), base.name, source))


class HitTest:
    """命中测试 (call inside the 知识库 tab)."""

    def __init__(self, page: Page):
        self.page = page
        with gr.Accordion("命中测试（检索测试）", open=False, elem_id="hit-test"):
            with gr.Row():
                self.hit_q = gr.Textbox(label="检索词", elem_id="hit-query", scale=4)
                self.hit_btn = gr.Button("测试", elem_id="hit-btn", scale=1)
            self.hit_msg = gr.Markdown(elem_id="hit-msg")
            self.hit_table = gr.Dataframe([], headers=["名次", "文档", "标题路径", "融合得分", "BM25 名次", "BM25 得分", "向量名次",
                                                       "向量得分", "正文"], interactive=False, wrap=True, elem_id="hit-table",
                                          column_widths=["5%", "15%", "14%", "7%", "6%", "7%", "6%", "7%", "33%"])

    def wire(self, kb_manage) -> None:
        self.hit_btn.click(self.hit_test, [kb_manage, self.hit_q], [self.hit_table, self.hit_msg])
        self.hit_q.submit(self.hit_test, [kb_manage, self.hit_q], [self.hit_table, self.hit_msg])

    def hit_test(self, name, query, request: gr.Request):
        query = (query or "").strip()
        if not query:
            return [], "请输入检索词。"
        try:
            _, s, a = self.page.managed(name, request)
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
