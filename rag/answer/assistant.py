"""Question (+ history) -> retrieval -> grounded answer with verified [n] citations, or a plain refusal."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator

from rag.answer.followup import rewrite_followup
from rag.answer.llm import (
    ChatModels,
    LLMError,
    LLMUnavailable,
    generate_stream,
    rewrite_with_llm,
)
from rag.answer.sentences import (
    Scorer,
    coverage,
    question_type,
    sentence_score,
    split_sentences,
)
from rag.answer.verify import has_content, strip_placeholders, verify_citations
from rag.ingest.places import place_mismatch, question_places
from rag.models import Answer, Backend, Citation, Hit
from rag.search.retrieval import Retriever
from rag.settings import Settings
from rag.text import normalize

log = logging.getLogger("kexie.answer")

REFUSAL = "根据现有资料未找到与该问题相关的内容。"
MAX_ANSWER_CHARS = 260


# ---------------------------------------------------------------------------------------------
class Assistant:
    """The answer pipeline; backends: extractive (offline default), openai, llamacpp."""

    def __init__(self, settings: Settings, retriever: Retriever | None = None):
        self.settings = settings
        self.retriever = retriever or Retriever(settings)
        self.llms = ChatModels()  # LLM clients and loaded GGUF models, reused across questions

    def close(self) -> None:
        """Release what the assistant holds open (at exit): vector store, LLM clients, local model worker."""
        self.llms.close()
        self.retriever.close()

    @staticmethod
    def _scorer(snap) -> Scorer:
        return Scorer(snap.tokenizer, snap.bm25.doc_freq, len(snap.chunks))

    def evidence_strength(self, question: str, hits: list[Hit], scorer: Scorer | None = None) -> float:
        """How well the best retrieved passages cover the question's terms (IDF-weighted, 0..1)."""
        if not hits:
            return 0.0
        scorer = scorer or self._scorer(self.retriever.snapshot())
        w = scorer.weights(question)
        return max(coverage(w, h.chunk.index_text) for h in hits[:3])

    def ask(self, question: str, history: list[tuple[str, str]] | None = None, backend: str | None = None, **kw) -> Answer:
        answer = None
        for answer in self.ask_stream(question, history, backend, **kw):
            pass
        assert answer is not None
        return answer

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

        `k`, `mode` and `llm` (endpoint settings) override the defaults for this question only."""
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
        scorer = self._scorer(snap)
        strength = self.evidence_strength(standalone, hits, scorer)
        base = Answer(question, "", False, [], hits, standalone, backend, evidence=strength, timings=timings,
                      generation=snap.manifest.generation)
        if strength < self.settings.refusal_threshold:
            yield self._refuse(base)
            return
        t = time.perf_counter()
        if backend == Backend.EXTRACTIVE:
            result = self._extractive(base, scorer, snap.places)
            timings["generate"] = time.perf_counter() - t
            yield result
            return
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
                final = self._fallback(base, scorer, snap.places, "大模型没有给出可用的回答，已改用离线抽取式回答")
            yield final
        except LLMUnavailable as e:
            log.warning("LLM backend %s unavailable, answered offline: %s", backend, e)  # an expired key shows here
            timings["generate"] = time.perf_counter() - t
            yield self._fallback(base, scorer, snap.places, f"大模型服务不可用（{e}），已改用离线抽取式回答")
        except LLMError as e:
            timings["generate"] = time.perf_counter() - t
            yield self._fallback(base, scorer, snap.places, f"{e}，已改用离线抽取式回答")

    def _fallback(self, a: Answer, scorer: Scorer, gaz: frozenset[str], notice: str) -> Answer:
        a.answer, a.citations, a.refused = "", [], False
        out = self._extractive(a, scorer, gaz)
        out.backend = Backend.EXTRACTIVE.value
        out.notice = notice
        return out

    # -- backends ---------------------------------------------------------------------------
    def _refuse(self, a: Answer) -> Answer:
        a.refused = True
        a.answer = REFUSAL + ("以下是最接近的段落，供参考。" if a.retrieved else "")
        a.citations = []
        return a

    def _extractive(self, a: Answer, scorer: Scorer, gaz: frozenset[str]) -> Answer:
        """Pick the sentences that best answer the question, in document order, each cited."""
        qt = question_type(a.standalone)
        w = scorer.weights(a.standalone)
        qplaces = question_places(a.standalone, gaz, scorer.tokenizer.is_known_place)
        cands = []  # (score, hit_rank, sentence_index, sentence, hit)
        for h in a.retrieved:
            c = h.chunk
            # A sentence inherits its document's context ("市科协" in the 青岛 report is 青岛市科协).
            context = f"{c.title} {c.heading}"
            title = normalize(c.title)
            label = c.heading.rsplit(" > ", 1)[-1]
            # The nearest heading is content too: bylines such as "曾能建 福建省科协党组书记" answer "谁".
            units = ([(-1, label)] if label and label not in c.title else []) + list(enumerate(split_sentences(c.text)))
            for i, s in units:
                s = _trim(s, w, qt, context)
                norm = normalize(s)
                if len(norm) < 4 or norm in title:
                    continue  # a document's own title is not an answer
                sc = sentence_score(s, w, qt, context)
                if place_mismatch(qplaces, s, c.heading, c.title, gaz):
                    sc *= 0.4  # 福建's figure does not answer a question about 天津
                # Higher-ranked passages get a small prior: retrieval already judged them.
                sc += 0.03 * (len(a.retrieved) - h.rank) / max(len(a.retrieved), 1)
                cands.append((sc, h.rank, i, s, h))
        if not cands:
            return self._refuse(a)
        cands.sort(key=lambda c: -c[0])
        best = a.confidence = cands[0][0]
        if best < self.settings.answer_floor:
            return self._refuse(a)
        # Numbers and definitions want the one sentence that states them; lists and facts may need more.
        limit, keep = {"list": (4, 0.75), "definition": (2, 0.85), "number": (2, 0.9)}.get(qt.kind, (3, 0.8))
        chosen: list = []
        total = 0
        for cand in cands:
            if len(chosen) >= limit or cand[0] < best * keep:
                break
            clean = _display(cand[3])
            if any(clean in _display(x[3]) or _display(x[3]) in clean for x in chosen):
                continue  # overlapping chunks repeat sentences
            if total and total + len(clean) > MAX_ANSWER_CHARS:
                break
            chosen.append(cand)
            total += len(clean)
        chosen.sort(key=lambda c: (c[1], c[2]))
        cites: dict[str, Citation] = {}
        parts = []
        for _, _, _, s, h in chosen:
            cite = cites.get(h.chunk.id)
            if cite is None:
                cite = cites[h.chunk.id] = _citation(len(cites) + 1, h)
            cite.support.append(s)
            parts.append(f"{_display(s)}[{cite.n}]")
        a.answer = "".join(_join(parts))
        a.citations = list(cites.values())
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


_CLAUSE = re.compile(r"[^，,；;：:]+[，,；;：:]?")
LONG_SENTENCE = 110


def _trim(sentence: str, weights: dict[str, float], qt, context: str) -> str:
    """A long run-on sentence is cut to its best window of clauses (the part that answers)."""
    if len(sentence) <= LONG_SENTENCE:
        return sentence
    clauses = _CLAUSE.findall(sentence)
    best, best_score = sentence[:LONG_SENTENCE], -1.0
    for i in range(len(clauses)):
        window = ""
        for j in range(i, len(clauses)):
            if window and len(window) + len(clauses[j]) > LONG_SENTENCE:
                break
            window += clauses[j]
            sc = sentence_score(window, weights, qt, context) - 0.001 * len(window)
            if sc > best_score:
                best, best_score = window, sc
    return best


def _citation(n: int, h: Hit) -> Citation:
    c = h.chunk
    return Citation(n, c.source, c.page, c.heading, c.text)


def _display(sentence: str) -> str:
    """A sentence as shown in an answer: list markers and markdown emphasis removed."""
    s = sentence.replace("**", "").strip()
    s = re.sub(r"^(?:\d+[.、．]\s*|[（(][一二三四五六七八九十\d]+[）)]\s*|[一二三四五六七八九十]+、\s*)", "", s)
    return s


def _join(parts: list[str]) -> list[str]:
    """Each sentence as "…[n]。": the marker sits before the full stop, as in the LLM answers."""
    out = []
    for p in parts:
        body, cite = p.rsplit("[", 1)
        body = body.rstrip("；;，,:： ")
        end = "。"
        if body and body[-1] in "。！？!?":
            body, end = body[:-1], body[-1]
        out.append(f"{body}[{cite}{end}")
    return out
