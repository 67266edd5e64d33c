"""Question (+ history) -> retrieval -> grounded answer with verified [n] citations, or a plain refusal."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from rag.answer.extractive import Scored, choose, compose, score
from rag.answer.faq import CACHE_NAME, FaqIndex, FaqMatch, FaqStore
from rag.answer.followup import rewrite_followup
from rag.answer.llm import (
    ChatModels,
    LLMError,
    LLMUnavailable,
    generate_stream,
    rewrite_with_llm,
)
from rag.answer.ranker import AnswerModels
from rag.answer.sentences import Scorer
from rag.answer.verify import has_content, strip_placeholders, verify_citations
from rag.models import Answer, Backend, Hit
from rag.search import structure
from rag.search.question import analyze
from rag.search.retrieval import Retriever
from rag.settings import Settings

log = logging.getLogger("kexie.answer")

REFUSAL = "根据现有资料未找到与该问题相关的内容。"
FAQ_MARK = "【标准答案】"
DOC_MARK = "【资料依据】"


# ---------------------------------------------------------------------------------------------
class Assistant:
    """The answer pipeline; backends: extractive (offline default), openai, llamacpp."""

    def __init__(self, settings: Settings, retriever: Retriever | None = None):
        self.settings = settings
        self.retriever = retriever or Retriever(settings)
        self.llms = ChatModels()  # LLM clients and loaded GGUF models, reused across questions
        self.models = AnswerModels.load(settings.answer_models or None)
        t = settings.answer_threshold
        self.threshold = self.models.threshold if t < 0 else t
        # The embedding model is asked for only once the FAQ folder holds pairs.
        self.faq = FaqStore(settings.faq_root, settings.index_dir / CACHE_NAME, lambda: self.retriever.embedder,
                            settings.faq_threshold)

    def close(self) -> None:
        """Release what the assistant holds open (at exit): vector store, LLM clients, local model worker."""
        self.llms.close()
        self.retriever.close()

    @staticmethod
    def _scorer(snap) -> Scorer:
        return Scorer(snap.tokenizer, snap.bm25.doc_freq, len(snap.chunks))

    def analyze(self, question: str, hits: list[Hit], snap=None) -> Scored:
        """The question's candidates ranked by the learned ranker, with the answerability probability."""
        snap = snap or self.retriever.snapshot()
        q = analyze(question, snap.places, snap.tokenizer.is_known_place, snap.documents)
        scorer = self._scorer(snap)
        w = scorer.weights(question)
        return score(q, w, hits, self.models, snap.places, scorer.unknown(w))

    def ask(self, question: str, history: list[tuple[str, str]] | None = None, backend: str | None = None, **kw) -> Answer:
        answer = None
        for answer in self.ask_stream(question, history, backend, **kw):
            pass
        assert answer is not None
        return answer

    def faq_index(self) -> FaqIndex | None:
        """The curated pairs of this knowledge base as they are now (None: no FAQ files)."""
        return self.faq.current(self.retriever.snapshot().tokenizer)

    def faq_match(self, question: str) -> FaqMatch | None:
        """The curated pair the (standalone) question asks, if any; never fails the answer."""
        try:
            snap = self.retriever.snapshot()
            index = self.faq.current(snap.tokenizer)
            return index.match(question, snap.places) if index is not None else None
        except Exception as e:  # a broken FAQ folder must not stop document answers
            log.warning("FAQ matching failed: %s", e)
            return None

    def ask_stream(
        self,
        question: str,
        history: list[tuple[str, str]] | None = None,
        backend: str | None = None,
        k: int | None = None,
        mode: str | None = None,
        llm: Settings | None = None,
    ) -> Iterator[Answer]:
        """Yield partial Answers while an LLM streams; the last one is final and verified.

        `k`, `mode` and `llm` (endpoint settings) override the defaults for this question only. A question
        matching a curated pair gets its 标准答案 first, the document answer with its citations after it."""
        for a in self._answer_stream(question, history, backend, k, mode, llm):
            yield self._with_faq(a, a.faq) if a.faq is not None else a

    @staticmethod
    def _with_faq(a: Answer, m: FaqMatch) -> Answer:
        if a.faq is m and a.answer.startswith(FAQ_MARK):  # this partial answer already has it
            return a
        head = f"{FAQ_MARK}{m.answer}\n（来源：{m.pair.where}）"
        doc = a.answer.strip()
        if a.refused or not doc:  # the documents say nothing: the curated answer alone
            a.answer, a.refused, a.citations = head, False, []
        else:
            a.answer = f"{head}\n\n{DOC_MARK}{doc}"
        a.faq = m
        return a

    def _answer_stream(self, question, history, backend, k, mode, llm) -> Iterator[Answer]:
        backend = Backend.from_str(backend or self.settings.answer_backend).value
        llm = llm or self.settings
        timings: dict[str, float] = {}
        snap = self.retriever.snapshot()  # one generation for the whole answer, even if a re-index commits meanwhile
        t = time.perf_counter()
        standalone = rewrite_followup(question, history or [], snap.places, snap.tokenizer.is_known_place)
        if backend != Backend.EXTRACTIVE and history:
            try:
                standalone = rewrite_with_llm(self.llms, llm, question, history, backend) or standalone
            except Exception as e:  # the rule-based rewrite stands
                log.warning("LLM rewrite failed: %s", e)
        timings["rewrite"] = time.perf_counter() - t
        t = time.perf_counter()
        hits = self.retriever.search(standalone, k or max(self.settings.top_k, 5), mode, snap=snap)
        timings["retrieve"] = time.perf_counter() - t
        t = time.perf_counter()
        scored = self.analyze(standalone, hits, snap)
        timings["rank"] = time.perf_counter() - t
        base = Answer(question, "", False, [], hits, standalone, backend, evidence=scored.answerable, timings=timings,
                      generation=snap.manifest.generation)
        t = time.perf_counter()
        base.faq = self.faq_match(standalone)
        if base.faq is not None:
            timings["faq"] = time.perf_counter() - t
            if backend != Backend.EXTRACTIVE:  # the curated answer shows while the model is still thinking
                yield base
        absent = structure.absent_articles(scored.ctx.question, snap.docs)
        if absent:  # the named regulation has no such article: say so, never quote another law's article
            refused = self._refuse(base)
            refused.answer = f"{REFUSAL}{absent}" + ("以下是最接近的段落，供参考。" if hits else "")
            yield refused
            return
        if backend == Backend.EXTRACTIVE:
            t = time.perf_counter()
            result = self._extractive(base, scored)
            timings["generate"] = time.perf_counter() - t
            yield result
            return
        if scored.answerable < 0.5 * self.threshold:  # clearly unanswerable: no generation
            yield self._refuse(base)
            return
        t = time.perf_counter()
        try:
            text = ""
            for token in generate_stream(self.llms, llm, backend, standalone, hits):
                text += token
                base.answer = text
                yield base
            timings["generate"] = time.perf_counter() - t
            t = time.perf_counter()
            final = self._from_llm_text(base, text)
            timings["verify"] = time.perf_counter() - t
            if final is None:  # an empty answer never reaches the user
                final = self._fallback(base, scored, "大模型没有给出可用的回答，已改用离线抽取式回答")
            yield final
        except LLMUnavailable as e:
            log.warning("LLM backend %s unavailable, answered offline: %s", backend, e)  # an expired key shows here
            timings["generate"] = time.perf_counter() - t
            yield self._fallback(base, scored, f"大模型服务不可用（{e}），已改用离线抽取式回答")
        except LLMError as e:
            timings["generate"] = time.perf_counter() - t
            yield self._fallback(base, scored, f"{e}，已改用离线抽取式回答")

    def _fallback(self, a: Answer, scored: Scored, notice: str) -> Answer:
        a.answer, a.citations, a.refused = "", [], False
        out = self._extractive(a, scored)
        out.backend = Backend.EXTRACTIVE.value
        out.notice = notice
        return out

    # -- backends ---------------------------------------------------------------------------
    def _refuse(self, a: Answer) -> Answer:
        a.refused = True
        a.answer = REFUSAL + ("以下是最接近的段落，供参考。" if a.retrieved else "")
        a.citations = []
        return a

    def _extractive(self, a: Answer, scored: Scored) -> Answer:
        """The ranked sentences composed by question type, each cited; a refusal below the threshold."""
        if not scored.cands or scored.answerable < self.threshold:
            return self._refuse(a)
        chosen = choose(scored)
        a.confidence = float(scored.probs.max())
        a.answer, a.citations = compose(chosen)
        return a

    def _from_llm_text(self, a: Answer, text: str) -> Answer | None:
        """The verified answer, the model's own refusal, or None when nothing usable is left."""
        text = text.strip()
        if REFUSAL[:8] in text or "未找到" in strip_placeholders(text)[:20]:
            return self._refuse(a)
        v = verify_citations(text, a.retrieved)  # placeholders removed there
        if not has_content(v.text):
            return None
        a.answer, a.citations = v.text, v.citations
        if v.dropped:
            a.notice = f"已删除 {len(v.dropped)} 句含有资料中没有的数字的内容"
        return a
