"""Queries over a generation: BM25 and vectors fused."""
