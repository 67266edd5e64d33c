"""Question (+ history) -> retrieval -> grounded answer with verified [n] citations, or a plain refusal."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

from rag.answer import refusal, spans
from rag.answer.compose import compose
from rag.answer.faq import CACHE_NAME, FaqIndex, FaqMatch, FaqStore, backs
from rag.answer.followup import rewrite_followup
from rag.answer.llm import (
    ChatModels,
    LLMError,
    LLMUnavailable,
    generate_stream,
    rewrite_with_llm,
)
from rag.answer.parts import split_parts
from rag.answer.verify import has_content, strip_placeholders, verify_citations
from rag.answer.wording import CLOSEST_NOTE, REFUSAL, with_curated
from rag.e5 import file as e5file
from rag.lang.numbers import cn_numeral
from rag.models import Answer, Backend, Hit
from rag.search import structure
from rag.search.query import Query
from rag.search.question import Question, analyze
from rag.search.retrieval import Retriever
from rag.settings import LLMEndpoint, Settings

log = logging.getLogger("kexie.answer")


@dataclass
class Turn:
    """One question as this turn analysed and retrieved it (read once; the answer stage reuses it)."""

    question: str
    q: Question
    hits: list[Hit]
    k: int
    mode: str | None
    snap: object


# ---------------------------------------------------------------------------------------------
class Assistant:
    """The answer pipeline; backends: extractive (offline default), openai, llamacpp."""

    def __init__(self, settings: Settings, retriever: Retriever | None = None):
        self.settings = settings
        self.retriever = retriever or Retriever(settings)
        self.llms = ChatModels()  # LLM clients and loaded GGUF models, reused across questions
        t = settings.answer_threshold
        self._threshold = None if t < 0 else t
        # The embedding model is asked for only once the FAQ folder holds pairs.
        self.faq = FaqStore(settings.faq_root, settings.index_dir / CACHE_NAME, lambda: self.retriever.embedder,
                            settings.faq_threshold)

    def close(self) -> None:
        """Release what the assistant holds open (at exit): vector store, LLM clients, local model worker."""
        self.llms.close()
        self.retriever.close()

    @cached_property
    def threshold(self) -> float:
        """Refuse below this no-answer probability: the setting, else the threshold chosen in the product's
        documents for this reading model (`train/refusal.py`), else the model's own (CMRC validation)."""
        if self._threshold is not None:
            return self._threshold
        reader = self.retriever.reader
        found = refusal.calibrated(e5file.sha256(reader.path))
        return reader.threshold if found is None else found

    def read(self, question: str, hits: list[Hit]) -> list[Hit]:
        """The hits, each with the reader's reading (already there when the retriever reranked them)."""
        todo = [h for h in hits if h.reading is None]
        if todo:
            for h, r in zip(todo, self.retriever.reader.read(question, [h.chunk.text for h in todo])):
                h.reading = r
        return hits

    def ask(self, question: str, history: list[tuple[str, str]] | None = None, backend: str | None = None, **kw) -> Answer:
        answer = None
        for answer in self.ask_stream(question, history, backend, **kw):
            pass
        assert answer is not None
        return answer

    def faq_index(self) -> FaqIndex | None:
        """The curated pairs of this knowledge base as they are now (None: no FAQ files)."""
        return self.faq.current(self.retriever.snapshot().tokenizer)

    def faq_match(self, question: str | Query) -> FaqMatch | None:
        """The curated pair the (standalone) question or the turn's Query asks, if any; never fails the answer."""
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
        llm: LLMEndpoint | None = None,
    ) -> Iterator[Answer]:
        """Yield partial Answers while an LLM streams; the last one is final and verified.

        `k`, `mode` and `llm` (the model endpoint) override the defaults for this question only. A question
        matching a curated pair gets its 标准答案 first, the document answer with its citations after it."""
        for a in self._answer_stream(question, history, backend, k, mode, llm):
            yield self._with_faq(a, a.faq) if a.faq is not None else a

    @staticmethod
    def _with_faq(a: Answer, m: FaqMatch) -> Answer:
        """The curated answer and the document answer kept apart (`faq`, `doc_answer`), `answer` the two joined."""
        if a.faq is m and a.doc_answer is not None and a.answer == with_curated(m.answer, m.pair.where, a.doc_answer):
            return a  # this partial answer already has it
        doc = a.answer.strip()
        if a.refused or not doc or not backs(m.answer, doc):  # the documents say nothing about it: the curated answer alone
            doc, a.refused, a.citations = "", False, []
        a.doc_answer, a.answer, a.faq = doc, with_curated(m.answer, m.pair.where, doc), m
        return a

    def _answer_stream(self, question, history, backend, k, mode, llm) -> Iterator[Answer]:
        backend = Backend.from_str(backend or self.settings.answer_backend).value
        llm = llm or self.settings.llm_endpoint()
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
        query = snap.query(standalone)  # analysed and embedded once per turn, for retrieval, answer and FAQ
        q = query.analysis
        k = k or max(self.settings.top_k, 5)
        hits = self.read(standalone, self.retriever.search(query, k, mode, snap=snap))
        timings["retrieve"] = time.perf_counter() - t
        evidence = spans.answerable(hits)
        base = Answer(question, "", False, [], hits, standalone, backend, evidence=evidence, timings=timings,
                      generation=snap.manifest.generation)
        t = time.perf_counter()
        base.faq = self.faq_match(query)
        if base.faq is not None:
            timings["faq"] = time.perf_counter() - t
            if backend != Backend.EXTRACTIVE:  # the curated answer shows while the model is still thinking
                yield base
        absent = structure.absent_articles(q, snap.docs)
        if absent:  # the named regulation has no such article: say so, never quote another law's article
            refused = self._refuse(base)
            refused.answer = f"{REFUSAL}{absent}" + (CLOSEST_NOTE if hits else "")
            yield refused
            return
        turn = Turn(standalone, q, hits, k, mode, snap)
        if backend == Backend.EXTRACTIVE:
            t = time.perf_counter()
            result = self._extractive(base, turn)
            timings["generate"] = time.perf_counter() - t
            yield result
            return
        if not self._answerable(turn):  # the same no-answer decision as the offline answer: no generation
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
                final = self._fallback(base, turn, "大模型没有给出可用的回答，已改用离线抽取式回答")
            yield final
        except LLMUnavailable as e:
            log.warning("LLM backend %s unavailable, answered offline: %s", backend, e)  # an expired key shows here
            timings["generate"] = time.perf_counter() - t
            yield self._fallback(base, turn, f"大模型服务不可用（{e}），已改用离线抽取式回答")
        except LLMError as e:
            timings["generate"] = time.perf_counter() - t
            yield self._fallback(base, turn, f"{e}，已改用离线抽取式回答")

    def _answerable(self, turn: "Turn") -> bool:
        """Some passage answers the question (or, for a several-part question, one of its parts would be
        looked up): the offline answer's decision, threshold, shape and place checks included."""
        if len(split_parts(turn.question, sorted(turn.q.places))) > 1:
            return spans.answerable(turn.hits) >= self.threshold
        return bool(spans.pick(turn.hits, turn.q, self.threshold, turn.snap.places).chosen)

    def _fallback(self, a: Answer, turn: "Turn", notice: str) -> Answer:
        a.answer, a.citations, a.refused = "", [], False
        out = self._extractive(a, turn)
        out.backend = Backend.EXTRACTIVE.value
        out.notice = notice
        return out

    # -- backends ---------------------------------------------------------------------------
    def _refuse(self, a: Answer) -> Answer:
        a.refused = True
        a.answer = REFUSAL + (CLOSEST_NOTE if a.retrieved else "")
        a.citations = []
        return a

    def _extractive(self, a: Answer, turn: "Turn") -> Answer:
        """The reader's answer sentences, each cited; each part of a several-part question answered or named
        as not found; a refusal when no part is answerable."""
        parts = split_parts(turn.question, sorted(turn.q.places))
        if len(parts) == 1:
            picked = [spans.pick(turn.hits, turn.q, self.threshold, turn.snap.places)]
        else:
            picked = []
            for part in parts:
                pq = analyze(part, turn.snap.places, turn.snap.tokenizer.is_known_place, turn.snap.documents)
                hits = self.read(part, self.retriever.search(part, turn.k, turn.mode, snap=turn.snap))
                picked.append(spans.pick(hits, pq, self.threshold, turn.snap.places))
                a.retrieved += [h for h in hits if h.chunk.id not in {x.chunk.id for x in a.retrieved}]
        if not any(p.chosen for p in picked):
            return self._refuse(a)
        cites: dict = {}
        texts = []
        for n, p in enumerate(picked, 1):
            if p.chosen:
                texts.append(compose(p.chosen, cites)[0])
            else:
                texts.append(f"资料中未找到第{cn_numeral(n)}问的答案。")
        a.answer = "".join(texts) if len(picked) == 1 else "\n".join(
            f"{cn_numeral(n)}、{t}" for n, t in enumerate(texts, 1))
        a.citations = list(cites.values())
        a.confidence = max(p.answerable for p in picked)
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
